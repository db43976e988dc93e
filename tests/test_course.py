"""`make course` (`python -m sprc_lib course`): the tour, the results table, the submission, the notebooks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sprc_lib.cli import main
from sprc_lib.course import reference
from sprc_lib.course import run as course_run
from sprc_lib.evaluation.metrics import HEADLINE_KEYS
from sprc_lib.paths import checkout, toy_root


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


@pytest.mark.slow
def test_course_tours_trains_evaluates_and_reports_each_notebook(capsys, monkeypatch):
    """`make course` on the course's own toy root (the shipped tiny models); notebook execution is nbval's test."""
    ran = []

    def notebooks(out_dir: Path) -> list[list[str]]:
        ran.append(out_dir)
        return [["00_setup_and_tour", "12", "ok"], ["01_data", "30", "FAILED: NameError: name 'x' is not defined"]]

    monkeypatch.setattr(course_run, "execute_notebooks", notebooks)
    code, out = run(["course"], capsys)
    assert code == 1 and ran == [checkout() / "build" / "notebooks"]  # a failed notebook fails the course
    assert f"CIRR under {toy_root()}" in out and f"FashionIQ under {toy_root()}" in out
    tour = out[: out.index("Running the notebooks")]
    assert tour.count(" ok") == 3 + 9  # every split of both datasets checked
    for metric in (*HEADLINE_KEYS["CIRR"], *HEADLINE_KEYS["FashionIQ"]):
        assert re.search(rf"{metric}\s+[\d.]+\s+[\d.]+", out), metric
    # The shipped weights, evaluated here, print exactly the table the README quotes (course.reference).
    assert "from the shipped reference weights" in out, "data/toy holds a local retraining: delete data/toy/runs"
    assert reference.summary_table(json.loads(reference.RESULTS.read_text())) in out
    submission = checkout() / "build" / "submission"
    assert all(str(submission) in line for line in out.split("validated:\n")[1].splitlines()[:2])
    assert "01_data" in out and "FAILED: NameError" in out
