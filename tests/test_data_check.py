"""`check-data`, `course` and `toy-data` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sprc_lib.cli import build_parser, main
from sprc_lib.data.check import SplitReport, format_reports
from sprc_lib.data.schema import (
    CIRR_DIR,
    CIRR_REAL_COUNTS,
    cirr_caption_path,
    cirr_split_path,
    fashioniq_image_dir,
    fashioniq_split_path,
)
from sprc_lib.data.toy import MARKER as TOY_MARKER


def break_copy(root: Path, image_split: str, record_split: str) -> tuple[Path, int]:
    """Delete one CIRR image and corrupt one caption record; return the image path and record index."""
    split_file = json.loads(cirr_split_path(root, image_split).read_text())
    image = root / CIRR_DIR / next(iter(split_file.values()))
    image.unlink()
    path = cirr_caption_path(root, record_split)
    records = json.loads(path.read_text())
    del records[11]["img_set"]
    path.write_text(json.dumps(records))
    return image, 11


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


@pytest.mark.parametrize("dataset", ["CIRR", "FashionIQ"])
def test_check_data_passes_on_toy_data(toy_root, capsys, dataset):
    code, out = run(["check-data", "--dataset", dataset, "--data-path", str(toy_root)], capsys)
    assert code == 0
    assert "toy-sized" in out and "ERROR" not in out and "MISSING" not in out
    rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
    assert len(rows) == (3 if dataset == "CIRR" else 9) and all(row[-1] == "ok" for row in rows)


def test_check_data_decodes_images_on_request(toy_root, capsys):
    code, out = run(
        ["check-data", "--dataset", "CIRR", "--data-path", str(toy_root), "--verify-images"], capsys
    )
    assert code == 0 and "unreadable" in out.splitlines()[1]


@pytest.mark.parametrize("same_split", [False, True])
def test_check_data_names_a_missing_image_and_a_broken_record(toy_copy, capsys, same_split):
    image, index = break_copy(toy_copy, "val" if same_split else "train", "val")
    code, out = run(["check-data", "--dataset", "CIRR", "--data-path", str(toy_copy)], capsys)
    assert code == 1
    assert str(image) in out and "1 missing image(s)" in out
    assert "cap.rc2.val.json" in out and f"record {index}" in out and "'img_set' is missing" in out


def test_check_data_fails_in_a_subprocess_too(toy_copy):
    image, index = break_copy(toy_copy, "test1", "train")
    cmd = [sys.executable, "-m", "sprc_lib", "check-data", "--dataset", "CIRR", "--data-path", str(toy_copy)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert (
        str(image) in done.stdout and "cap.rc2.train.json" in done.stdout and f"record {index}" in done.stdout
    )


def test_check_data_lists_unreadable_images(toy_copy, capsys):
    names = json.loads(cirr_split_path(toy_copy, "test1").read_text())
    bad = toy_copy / CIRR_DIR / names[next(iter(names))]
    bad.unlink()  # a hard link to the shared toy data: replace, never write into it
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, out = run(["check-data", "--dataset", "CIRR", "--data-path", str(toy_copy)], capsys)
    assert code == 0  # existence is all a plain check looks at
    code, out = run(
        ["check-data", "--dataset", "CIRR", "--data-path", str(toy_copy), "--verify-images"], capsys
    )
    assert code == 1 and "UNREADABLE" in out and f"1 unreadable image(s): {bad}" in out


def test_check_data_skip_missing_accepts_missing_fashioniq_images(toy_copy, capsys):
    names = json.loads(fashioniq_split_path(toy_copy, "dress", "val").read_text())
    for name in names[:7]:
        (fashioniq_image_dir(toy_copy) / f"{name}.png").unlink()
    args = ["check-data", "--dataset", "FashionIQ", "--data-path", str(toy_copy)]
    code, out = run(args, capsys)
    assert code == 1 and "MISSING IMAGES" in out and "(and 2 more)" in out
    code, out = run([*args, "--skip-missing"], capsys)
    assert code == 0 and "ok with --skip-missing" in out and "--skip-missing would drop" in out


def test_real_counts_are_compared_only_for_real_looking_data(tmp_path):
    def reports(images: int) -> list[SplitReport]:
        return [SplitReport("CIRR", s, None, CIRR_REAL_COUNTS[s], 10, images) for s in CIRR_REAL_COUNTS]

    assert "real triplets" not in format_reports(reports(360), tmp_path)
    table = format_reports(reports(2_000), tmp_path)
    assert "real triplets" in table.splitlines()[1] and "28,225" in table and "toy-sized" not in table
    (tmp_path / TOY_MARKER).write_text("{}")  # a large toy dataset is still toy data
    assert "real triplets" not in format_reports(reports(2_000), tmp_path)


def test_toy_data_flags_parse():
    args = build_parser().parse_args(["toy-data", "--out", "x", "--seed", "3", "--size", "medium"])
    assert (args.out, args.seed, args.size) == (Path("x"), 3, "medium")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["toy-data", "--size", "large"])
