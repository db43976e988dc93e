"""The real-size rehearsal's parts at small cost: its mini CIRR, its tokenizer's size, and how it measures a command.
(The rehearsal itself, `make rehearse`, builds multi-GB models and runs for many minutes: not part of make test.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from sprc_lib.course.bench import print_bench
from sprc_lib.course.reference import doc_block
from sprc_lib.course.rehearse import (
    CUT,
    FASHION_CUT,
    IMAGE_SIZE,
    MARK_README,
    NOTEBOOK_DIR,
    NOTEBOOKS,
    TARGET_RAM_GB,
    Row,
    bench_figures,
    blip2_tokenizer,
    commands,
    main,
    measure,
    mini_cirr,
    mini_fashioniq,
    notebook_commands,
    notebook_env,
    table,
    with_parameters,
)
from sprc_lib.course.setup import setup
from sprc_lib.data import CIRRDataset, FashionIQDataset
from sprc_lib.model.config import blip2_vitg_config
from sprc_lib.model.loading import BLIP2_VOCABULARY
from sprc_lib.paths import checkout
from sprc_lib.training.disk import run_disk


def test_the_mini_cirr_keeps_a_few_triplets_with_their_images_at_a_real_resolution(tmp_path):
    root = mini_cirr(tmp_path)
    for split in ("train", "val"):
        triplets = CIRRDataset(root, split, "relative")
        assert len(triplets) == CUT[split]
    val = CIRRDataset(root, "val", "classic")
    with Image.open(val.image_path(val.image_names[0])) as image:
        assert image.size == IMAGE_SIZE
    test1 = json.loads((root / "cirr_dataset" / "cirr" / "image_splits" / "split.rc2.test1.json").read_text())
    assert len(test1) > 50  # the submission's top 50 needs more than 50 images to rank


def test_the_tokenizer_has_blip2s_vocabulary_size(tmp_path):
    assert len(blip2_tokenizer(tmp_path)) == BLIP2_VOCABULARY


def test_a_command_is_measured_in_a_process_of_its_own(tmp_path):
    row = measure("the version", ["--help"], [tmp_path], tmp_path / "log.txt")
    assert row.code == 0 and 0.01 < row.peak_gb < 5 and row.seconds > 0
    assert "usage" in (tmp_path / "log.txt").read_text()
    assert measure("a wrong command", ["no-such-command"], [], tmp_path / "log2.txt").verdict() == "FAILED"


def test_the_verdict_is_against_a_free_colab_session():
    assert Row("a", 0, 8.0, 1, 0).verdict() == "fits"
    assert Row("a", 0, 10.0, 1, 0).verdict() == "fits, above 9 GB"
    assert Row("a", 0, 15.3, 1, 0).verdict() == "ends a free Colab session"


def test_a_folder_the_rehearsal_did_not_make_is_left_alone(tmp_path, capsys):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "mine.txt").write_text("a user's file")
    assert main([str(tmp_path)]) == 2
    assert "a folder the rehearsal did not make" in capsys.readouterr().err
    assert (tmp_path / "work" / "mine.txt").read_text() == "a user's file"


def test_the_mini_fashioniq_lacks_one_image_as_real_copies_do(tmp_path):
    root = mini_fashioniq(tmp_path)
    train = FashionIQDataset(root, "train", ["shirt"], "relative")
    assert len(train) == FASHION_CUT["train"]
    with Image.open(train.image_path(train.triplets[0].reference)) as image:
        assert image.size == IMAGE_SIZE
    with pytest.warns(UserWarning, match="1 of 16 images are missing"):
        val = FashionIQDataset(root, "val", ["dress"], "relative", skip_missing=True)
    assert len(val.missing_images) == 1 and len(val) == FASHION_CUT["val"] - 1


def test_the_bench_figures_are_read_from_the_bench_itself(capsys):
    print_bench(preset="tiny", batch_size=4, repeats=1, device="cpu", training_only=True)
    speed_up, vit_share = bench_figures(capsys.readouterr().out)
    assert speed_up > 0 and vit_share > 0


def test_the_notebooks_find_every_stand_in_in_full_mode(tmp_path, monkeypatch):
    paths = {k: tmp_path / k for k in ("data", "blip2", "released", "released_fiq", "reranker")}
    for name, value in notebook_env(paths, tmp_path / "work").items():
        monkeypatch.setenv(name, value)
    course = setup()
    assert course.mode == "full" and course.data == paths["data"] and course.weights == str(paths["blip2"])
    assert course.checkpoints == {"CIRR": paths["released"], "FashionIQ": paths["released_fiq"]}
    assert set(course.models.values()) == {tmp_path / "work" / "converted"}
    assert set(course.rerankers.values()) == {paths["reranker"]}
    assert (course.max_steps, course.max_queries, course.skip_missing, course.standin_weights) == (8, 2, True, True)


def test_the_readme_shows_a_rehearsal_of_every_command_each_fitting_a_free_colab_session():
    """The block `make rehearse` writes into the README: the current list of commands, each passed, each below
    the 9 GB mark that leaves a free Colab session room for a kernel and loader workers, each verdict the one its
    figures give."""
    block = doc_block(checkout() / "README.md", MARK_README)
    assert block, "README: the rehearsal block is empty; run `make rehearse`"
    header, *lines = block.split("```text\n")[1].split("```")[0].strip().splitlines()
    columns = re.split(r"\s{2,}", table([]))
    assert re.split(r"\s{2,}", header) == columns, "README: the rehearsal block does not hold a rehearsal's table"
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines]
    paths = {k: Path(k) for k in ("data", "blip2", "released", "released_fiq", "reranker")}
    expected = [name for name, *_ in commands(paths, Path("work")) + notebook_commands(paths, Path("work"))]
    assert [r[0] for r in rows] == expected, "README: the rehearsal table is not the current rehearsal's; rerun it"
    for name, code, peak, seconds, disk, verdict in rows:
        row = Row(name, int(code), float(peak), float(seconds), float(disk))
        assert row.verdict() == verdict and row.code == 0 and row.peak_gb < TARGET_RAM_GB, name


def test_the_readme_shows_a_rehearsal_that_took_under_an_hour():
    """`make rehearse` is meant to run on a 2-core CPU within an hour: the block says how long the shown one took."""
    summary = " ".join(doc_block(checkout() / "README.md", MARK_README).split())
    took = re.search(r"Time: (\d+) minutes in all on this CPU \((\d+) for the commands above", summary)
    assert took, "README: the rehearsal block does not say how long the rehearsal took; rerun it"
    assert int(took.group(1)) < 60, "README: the rehearsal shown took an hour or more"


def test_the_readme_quotes_the_rehearsals_cache_gain_and_the_caches_size():
    readme = " ".join((checkout() / "README.md").read_text().split())
    summary = " ".join(doc_block(checkout() / "README.md", MARK_README).split())
    measured = re.search(r"ran ([\d.]+)x faster than from pixels; the ViT's forward on both images took ([\d.]+)x",
                         summary)
    quoted = re.search(r"a training step from the cache ran ([\d.]+)x faster than from pixels, the ViT's forward on "
                       r"both images taking ([\d.]+)x the trainable step", readme)
    assert measured and quoted and quoted.groups() == measured.groups(), "README: quote the rehearsal's figures"
    per_image = run_disk(blip2_vitg_config(BLIP2_VOCABULARY)).cache_per_image
    assert f"{per_image:,} bytes per image at the real size" in readme


def test_each_notebook_gets_its_parameters_after_its_parameters_cell(tmp_path):
    for name, values in NOTEBOOKS.items():
        book = nbformat.read(with_parameters(NOTEBOOK_DIR / f"{name}.ipynb", values, tmp_path), as_version=4)
        tags = [cell.metadata.get("tags", []) for cell in book.cells]
        at = tags.index(["injected-parameters"])
        assert "parameters" in tags[at - 1], name
        assert all(f"{key} = {value!r}" in book.cells[at].source for key, value in values.items())


def test_notebook_04_times_enough_steps_to_measure_a_gap():
    """The timing skips the first steps (warm-up) and needs two more to measure one gap between steps."""
    source = (NOTEBOOK_DIR / "04_training.py").read_text()
    skip = int(re.search(r"seconds_per_step\(skip=(\d+)\)", source).group(1))
    assert NOTEBOOKS["04_training"]["TIMED_STEPS"] >= skip + 2
