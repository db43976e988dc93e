"""CIRR test-server files: built from scores, validated, written atomically, round-tripped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import sprc_lib.evaluation.submission as submission
import sprc_lib.files as files
from sprc_lib.evaluation.submission import cirr_submission, validate_cirr_submission, write_cirr_submission

# A synthetic test1 gallery of 60 images and 3 queries, each with a 6-image group holding its reference.
GALLERY = [f"test1-{n}-{n % 4}-img{n % 2}" for n in range(60)]
PAIR_IDS = [12063, 12064, 12100]
REFERENCES = [GALLERY[0], GALLERY[10], GALLERY[59]]
GROUPS = [
    [GALLERY[0], GALLERY[5], GALLERY[3], GALLERY[4], GALLERY[2], GALLERY[1]],
    [GALLERY[20], GALLERY[10], GALLERY[30], GALLERY[40], GALLERY[50], GALLERY[55]],
    [GALLERY[59], GALLERY[1], GALLERY[58], GALLERY[57], GALLERY[56], GALLERY[2]],
]
VALIDATION = {
    "pair_ids": PAIR_IDS,
    "gallery_names": GALLERY,
    "reference_names": REFERENCES,
    "group_members": GROUPS,
}


def _scores() -> torch.Tensor:
    # Query 0: scores fall with the gallery index (59 .. 0), so the reference (index 0) would be
    # first. Query 1: the same order reversed. Query 2: seeded random.
    falling = torch.arange(59, -1, -1, dtype=torch.float32)
    return torch.stack([falling, -falling, torch.rand(60, generator=torch.Generator().manual_seed(0))])


def _valid() -> tuple[dict[str, Any], dict[str, Any]]:
    return cirr_submission(_scores(), GALLERY, PAIR_IDS, REFERENCES, GROUPS)


def test_built_lists_by_hand() -> None:
    recall, subset = _valid()
    assert (recall["version"], recall["metric"]) == ("rc2", "recall")
    assert (subset["version"], subset["metric"]) == ("rc2", "recall_subset")
    assert set(recall) == set(subset) == {"version", "metric", "12063", "12064", "12100"}
    # Query 0: order 0, 1, 2, ...; the reference (0) removed -> images 1..50.
    assert recall["12063"] == GALLERY[1:51]
    # Its group minus the reference, in that order: 1, 2, 3 (then 4, 5).
    assert subset["12063"] == [GALLERY[1], GALLERY[2], GALLERY[3]]
    # Query 1: order 59, 58, ..., 0; the reference (10) is not in the top 50 (59..10 has 50 images,
    # minus 10 gives 59..11 then 9) -> 59 down to 11, then 9.
    assert recall["12064"] == [GALLERY[i] for i in range(59, 10, -1)] + [GALLERY[9]]
    # Group minus the reference, highest index first: 55, 50, 40.
    assert subset["12064"] == [GALLERY[55], GALLERY[50], GALLERY[40]]
    assert GALLERY[59] not in recall["12100"]


def test_round_trip_write_load_validate(tmp_path: Path) -> None:
    recall, subset = _valid()
    out = tmp_path / "submissions"
    paths = write_cirr_submission(out, "tiny", recall, subset, **VALIDATION)
    assert paths == (out / "recall_submission_tiny.json", out / "recall_subset_submission_tiny.json")
    loaded = [json.loads(p.read_text()) for p in paths]  # both files are valid JSON
    assert loaded == [recall, subset]
    validate_cirr_submission(*loaded, **VALIDATION)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temp file left


def test_rewrite_replaces_the_old_files(tmp_path: Path) -> None:
    recall, subset = _valid()
    write_cirr_submission(tmp_path, "run", recall, subset, **VALIDATION)
    recall2 = dict(recall, **{"12063": list(reversed(recall["12063"]))})
    path, _ = write_cirr_submission(tmp_path, "run", recall2, subset, **VALIDATION)
    assert json.loads(path.read_text())["12063"] == list(reversed(recall["12063"]))
    assert len(list(tmp_path.iterdir())) == 2


def _drop(d: dict[str, Any], key: str) -> None:
    del d[key]


def _set(d: Any, key: Any, value: Any) -> None:
    d[key] = value


# (which file, how to break it, what the message must say)
BREAKAGES = [
    pytest.param(
        "recall",
        lambda r: _drop(r, "12064"),
        r"recall submission: 1 pair id\(s\) missing, e.g. pair id 12064",
        id="missing pair id",
    ),
    pytest.param(
        "recall_subset",
        lambda r: _set(r, "99999", []),
        r"recall_subset submission: 1 unexpected pair id\(s\), e.g. '99999'",
        id="extra pair id",
    ),
    pytest.param("recall", lambda r: r["12063"].pop(), r"pair id 12063: expected 50 names, got 49", id="49 names"),
    pytest.param(
        "recall",
        lambda r: _set(r["12100"], 49, r["12100"][0]),
        r"pair id 12100: name .* appears more than once",
        id="duplicate name",
    ),
    pytest.param(
        "recall",
        lambda r: _set(r["12063"], 3, "test1-999-0-img0"),
        r"pair id 12063: name 'test1-999-0-img0' is not in the test gallery",
        id="name outside gallery",
    ),
    pytest.param(
        "recall",
        lambda r: _set(r["12063"], 0, GALLERY[0]),
        r"recall submission, pair id 12063: contains its own reference",
        id="reference included",
    ),
    pytest.param(
        "recall_subset",
        lambda r: _set(r["12064"], 2, GALLERY[11]),
        r"recall_subset submission, pair id 12064: name '.*' is not in its group",
        id="subset name outside group",
    ),
    pytest.param(
        "recall_subset",
        lambda r: _set(r["12064"], 0, GALLERY[10]),
        r"recall_subset submission, pair id 12064: contains its own reference",
        id="subset reference included",
    ),
    pytest.param(
        "recall_subset",
        lambda r: r["12063"].append(GALLERY[4]),
        r"pair id 12063: expected 3 names, got 4",
        id="4 subset names",
    ),
    pytest.param(
        "recall",
        lambda r: _set(r, "version", "rc1"),
        r"recall submission: version must be 'rc2', got 'rc1'",
        id="wrong version",
    ),
    pytest.param(
        "recall_subset",
        lambda r: _set(r, "metric", "recall"),
        r"recall_subset submission: metric must be 'recall_subset', got 'recall'",
        id="wrong metric",
    ),
    pytest.param(
        "recall",
        lambda r: _set(r, "12063", "test1-1-1-img1"),
        r"pair id 12063: expected a list of image names",
        id="not a list",
    ),
]


@pytest.mark.parametrize(("which", "breakage", "message"), BREAKAGES)
def test_each_breakage_is_caught_and_nothing_is_written(
    which: str, breakage: Any, message: str, tmp_path: Path
) -> None:
    recall, subset = _valid()
    breakage(recall if which == "recall" else subset)
    with pytest.raises(ValueError, match=message):
        validate_cirr_submission(recall, subset, **VALIDATION)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        write_cirr_submission(out, "bad", recall, subset, **VALIDATION)
    assert not out.exists()


def test_size_limit_is_checked_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recall, subset = _valid()
    monkeypatch.setattr(submission, "MAX_SUBMISSION_BYTES", 1000)  # the small recall file is ~2.7 kB
    with pytest.raises(ValueError, match=r"recall_submission_big\.json would be .* over the server's limit"):
        write_cirr_submission(tmp_path / "out", "big", recall, subset, **VALIDATION)
    assert not (tmp_path / "out").exists()


def test_submission_name_must_be_a_file_name(tmp_path: Path) -> None:
    recall, subset = _valid()
    with pytest.raises(ValueError, match="plain file-name"):
        write_cirr_submission(tmp_path, "../escape", recall, subset, **VALIDATION)


def test_builder_rejects_what_the_server_would() -> None:
    with pytest.raises(ValueError, match="at least 51"):
        cirr_submission(_scores()[:, :50], GALLERY[:50], PAIR_IDS, REFERENCES, GROUPS)
    with pytest.raises(ValueError, match="pair id 12063 appears twice"):
        cirr_submission(_scores(), GALLERY, [12063, 12063, 12100], REFERENCES, GROUPS)
    small_groups = [g[:3] for g in GROUPS]  # 2 members besides the reference
    with pytest.raises(ValueError, match="subset list needs 3"):
        cirr_submission(_scores(), GALLERY, PAIR_IDS, REFERENCES, small_groups)


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recall, subset = _valid()

    def disk_full(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", disk_full)
    with pytest.raises(OSError, match="disk full"):
        write_cirr_submission(tmp_path, "crash", recall, subset, **VALIDATION)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file


def test_a_test1_gallery_too_small_for_the_top_50_is_named_before_any_image_is_encoded(toy_copy, capsys):
    from sprc_lib.cli import main
    from sprc_lib.course.shipped import SHIPPED

    cirr = toy_copy / "cirr_dataset" / "cirr"
    queries = json.loads((cirr / "captions" / "cap.rc2.test1.json").read_text())[:4]
    names = {q["reference"] for q in queries} | {m for q in queries for m in q["img_set"]["members"]}
    split = json.loads((cirr / "image_splits" / "split.rc2.test1.json").read_text())
    (cirr / "captions" / "cap.rc2.test1.json").write_text(json.dumps(queries))
    (cirr / "image_splits" / "split.rc2.test1.json").write_text(json.dumps({n: split[n] for n in names}))
    argv = ["cirr-submission", "--data-path", str(toy_copy), "--preset", "tiny", "--model-path", str(SHIPPED / "CIRR"),
            "--output-dir", str(toy_copy / "submission"), "--feature-cache", str(toy_copy / "fresh-cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"CIRR test1: {len(names)} images" in err and "at least 51" in err and "Traceback" not in err
    assert not list((toy_copy / "fresh-cache").rglob("*.npy"))  # no image encoded
    assert not (toy_copy / "submission").exists()
