"""The real-size rehearsal's parts at small cost: its mini CIRR, its tokenizer's size, and how it measures a command.
(The rehearsal itself, `make rehearse`, builds multi-GB models and runs for many minutes: not part of make test.)"""

from __future__ import annotations

import json

from PIL import Image

from sprc_lib.course.rehearse import CUT, IMAGE_SIZE, Row, blip2_tokenizer, main, measure, mini_cirr
from sprc_lib.data import CIRRDataset
from sprc_lib.model.loading import BLIP2_VOCABULARY


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
