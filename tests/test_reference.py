"""The toy track's reference numbers: recomputed from the shipped weights, they are what the docs say, and
evaluating fixed weights gives them whatever the thread count or batch size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sprc_lib.course import reference
from sprc_lib.course.shipped import SHIPPED
from sprc_lib.data.schema import DATASETS
from sprc_lib.evaluation import EvalSettings, chance, make_eval_context
from sprc_lib.evaluation.context import scores_exactly
from sprc_lib.model.loading import load_model
from sprc_lib.model.tokenizer import load_tokenizer
from sprc_lib.paths import checkout


def test_chance_is_what_reference_json_says(toy_root):
    """The shipped weights' own numbers are checked where they are computed: CIRR's, every metric of both stages
    and of the pure re-ranking, by the thread test below; both datasets' summary tables where `make course`
    prints them from its own evaluation (test_course.py)."""
    assert {d: chance(d, toy_root) for d in DATASETS} == {
        d: stages["chance"] for d, stages in json.loads(reference.RESULTS.read_text()).items()}


def test_no_toy_metric_the_course_shows_is_saturated():
    """A recall at 100 cannot show a difference: every toy metric of the shipped weights, and of every retrained
    seed, stays below it (toy FashionIQ's galleries hold each garment in several photos for this)."""
    spread = json.loads(reference.SPREAD.read_text())
    for found in [json.loads(reference.RESULTS.read_text()), *spread["results"]]:
        for dataset, stages in found.items():
            for stage, metrics in stages.items():
                full = [name for name, value in metrics.items() if value >= 100.0]
                assert not full, f"{dataset} {stage}: {full} at 100"


# Scores CIRR in a fresh process with two torch threads, whose waiting threads sleep instead of spinning on a
# core that make test's other jobs need (OpenMP reads this before torch starts its threads).
TWO_THREADS = """
import json, sys, torch
from pathlib import Path
from sprc_lib.course import reference
from sprc_lib.course.toy_track import tiny_stages
root = Path(sys.argv[1])
assert torch.get_num_threads() == 2
stage1, stage2 = tiny_stages("CIRR", root, reference.shipped_folders("CIRR"), 7)
assert stage1.exact and stage2.ctx.exact and stage1.batch_size == stage2.ctx.batch_size == 7
print(json.dumps(reference.cirr_stages(stage1, stage2, root)))
"""


@pytest.mark.slow
def test_evaluation_is_the_same_for_any_thread_count_and_batch_size(toy_root):
    """Two threads and batches of 7 score CIRR exactly as reference.json says, to the last bit of every metric of
    both stages and of the pure re-ranking. reference.json was written with one thread and batches of 32 on the
    machine that shipped the weights, and `make course` prints its tables from batches of 32 here
    (test_course.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-c", TWO_THREADS, str(toy_root)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == json.loads(reference.RESULTS.read_text())["CIRR"]


@pytest.mark.parametrize("doc", reference.DOCS)
def test_every_doc_quotes_the_generated_numbers(doc):
    found, spread = json.loads(reference.RESULTS.read_text()), json.loads(reference.SPREAD.read_text())
    assert reference.doc_block(checkout() / doc) == reference.render(found, spread), (
        f"{doc}: its toy results differ from the generated ones: run `make reference`")


def test_the_readme_table_is_what_make_course_prints():
    found = json.loads(reference.RESULTS.read_text())
    assert reference.summary_table(found) in reference.doc_block(checkout() / "README.md")


def test_a_doc_without_its_block_is_refused(tmp_path):
    for name in reference.DOCS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("# a doc whose markers were lost\n")
    with pytest.raises(ValueError, match="no <!-- toy-results --> block"):
        reference.write_docs(tmp_path, "text")


def test_the_tolerance_widens_the_seeds_range_by_its_width():
    assert reference.tolerance(60.0, 66.0) == (54.0, 72.0)
    assert reference.tolerance(99.0, 100.0) == (97.0, 100.0)  # at least 2 points, never past 100


def test_small_models_score_exactly_on_a_cpu_and_real_ones_do_not():
    model = load_model(SHIPPED / "CIRR")
    cpu = torch.device("cpu")
    assert scores_exactly(model, cpu, "auto")
    assert not scores_exactly(model, cpu, "fp32")  # asked for by name: float32 it is
    assert not scores_exactly(model, torch.device("cuda"), "auto")
    big = torch.nn.Linear(5000, 5000)  # 25 M parameters, above the limit
    assert not scores_exactly(big, cpu, "auto")


def test_exact_scoring_uses_a_float64_copy_and_leaves_the_model_alone(toy_root):
    model, tokenizer = load_model(SHIPPED / "CIRR").eval(), load_tokenizer(SHIPPED / "CIRR")
    ctx = make_eval_context(model, tokenizer, EvalSettings(device="cpu"))
    scorer = ctx.scorer()
    assert scorer is not model and next(scorer.parameters()).dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float32
