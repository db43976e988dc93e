"""The toy track's reference numbers: recomputed from the shipped weights, they are what the docs say, and
evaluating fixed weights gives them whatever the thread count or batch size."""

from __future__ import annotations

import json

import pytest
import torch

from sprc_lib.course import reference
from sprc_lib.course.shipped import SHIPPED
from sprc_lib.course.toy_track import reranker_name
from sprc_lib.evaluation import evaluation_context
from sprc_lib.evaluation.context import scores_exactly
from sprc_lib.evaluation.protocols import validation_stages
from sprc_lib.evaluation.rerank import Reranker
from sprc_lib.model.loading import load_model, load_reranker
from sprc_lib.model.tokenizer import load_tokenizer
from sprc_lib.paths import checkout


@pytest.mark.slow
def test_the_shipped_weights_score_what_reference_json_says(toy_root):
    assert reference.reference_results(toy_root) == json.loads(reference.RESULTS.read_text()), (
        "the shipped weights score other numbers than sprc_lib/course/reference.json: run `make reference`")


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


def _metrics(toy_root, threads: int, batch_size: int) -> list[dict[str, float]]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, tokenizer = load_model(SHIPPED / "CIRR").eval(), load_tokenizer(SHIPPED / "CIRR")
        ranker = load_reranker(SHIPPED / reranker_name("CIRR")).eval()
        ctx = evaluation_context(model, tokenizer, device="cpu", batch_size=batch_size)
        second = Reranker(evaluation_context(ranker, tokenizer, device="cpu", batch_size=batch_size), 20, 0.5)
        assert ctx.exact and second.ctx.exact
        return validation_stages(ctx, "CIRR", toy_root, second)
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_evaluation_is_the_same_for_any_thread_count_and_batch_size(toy_root):
    runs = {(threads, batch): _metrics(toy_root, threads, batch) for threads, batch in ((1, 32), (2, 32), (1, 7))}
    first = runs[(1, 32)]
    for key, found in runs.items():
        assert found == first, key  # every metric of both stages, bit for bit


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
    ctx = evaluation_context(model, tokenizer, device="cpu")
    scorer = ctx.scorer()
    assert scorer is not model and next(scorer.parameters()).dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float32
