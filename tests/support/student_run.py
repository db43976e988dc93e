"""The student copies run as a student meets them: every lesson cell runs, and every check says "not yet" with its
hint until the student's code is right; Otter's autograder gives a solved notebook full marks.

Run by `make test-student` after `make student` wrote the copies (executing eight notebooks is too slow for the
unit suite); each copy's lesson outputs are also read for noise (half-drawn bars, loading bars).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sprc_lib.course.outputs import noise
from sprc_lib.course.student import OWNED

COPIES = Path(os.environ.get("SPRC_STUDENT_COPIES", "build/student")).resolve()
SOLVED = Path(os.environ.get("SPRC_AUTOGRADER", "build/autograder")).resolve()
GRADED = "00_setup_and_tour"  # the chapter whose solved notebook the autograder grades here (the quickest to run)


def hint(question: str) -> str:
    """The failure message of a question's public test (an OK-format file: Python that sets `test`)."""
    scope: dict = {}
    exec((COPIES / "tests" / f"{question}.py").read_text(), scope)
    return scope["test"]["suites"][0]["cases"][0]["failure_message"]


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("path", sorted(COPIES.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_a_student_copy_runs_its_lesson_and_each_check_says_not_yet_with_its_hint(path: Path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    checks = [c for c in nb.cells if c.source.startswith("grader.check(")]
    assert len(checks) >= 3
    for cell in checks:
        question = re.fullmatch(r'grader\.check\("(\w+)"\)', cell.source).group(1)
        shown = squash("".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs))
        assert f"{question} results:" in shown and "All test cases passed" not in shown, shown[:300]
        assert squash(hint(question)) in shown, f"{question}: the hint is not shown"
    assert noise(nb) == []


def graded(notebook: Path, out: Path) -> dict[str, tuple[float, float]]:
    """{exercise: (score, out of)} that Otter's autograder (`otter run`) gives `notebook`."""
    done = subprocess.run([sys.executable, "-m", "otter", "run", "--no-logo", "-a",
                           str(SOLVED / f"{GRADED}-autograder.zip"), "-o", str(out), str(notebook)],
                          capture_output=True, text=True, cwd=out)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    return {t["name"]: (t["score"], t["max_score"]) for t in results["tests"] if "score" in t}  # not the summary


def test_the_autograder_gives_a_solved_notebook_full_marks_and_a_student_copy_none(tmp_path):
    (tmp_path / "solved").mkdir(), (tmp_path / "copy").mkdir()
    assert graded(SOLVED / f"{GRADED}.ipynb", tmp_path / "solved") == {f"ch00_ex{i}": (1.0, 1.0) for i in (1, 2, 3)}
    assert graded(COPIES / f"{GRADED}.ipynb", tmp_path / "copy") == {f"ch00_ex{i}": (0.0, 1.0) for i in (1, 2, 3)}


def test_the_student_folder_holds_the_copies_and_their_public_tests_only():
    """What a teacher hands out: no solved notebook, no autograder, nothing an earlier version left."""
    kept = {p.relative_to(COPIES).as_posix() for p in COPIES.rglob("*") if p.is_file()} - {OWNED, ".OTTER_LOG"}
    assert kept and all(re.fullmatch(r"\d\d_\w+\.ipynb|tests/ch\d\d_ex\d+\.py", name) for name in kept), kept


def test_the_copies_are_there():
    assert len(list(COPIES.glob("[0-9][0-9]_*.ipynb"))) == 8, f"{COPIES}: run `make student` first"
    assert (SOLVED / f"{GRADED}-autograder.zip").is_file(), f"{SOLVED}: run `make student` first"
