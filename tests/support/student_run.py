"""The student copies run as a student meets them: every lesson cell, then the first exercise's check stops them.

Run by `make test-student` after `make student` wrote the copies (executing seven notebooks is too slow for the
unit suite); each copy's lesson outputs are also read for noise (half-drawn bars, loading bars).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from sprc_lib.course.outputs import noise
from sprc_lib.course.student import CHECK, tags

COPIES = Path(os.environ.get("SPRC_STUDENT_COPIES", "build/student")).resolve()


@pytest.mark.parametrize("path", sorted(COPIES.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_a_student_copy_runs_its_lesson_and_stops_at_the_first_exercise_with_a_hint(path: Path):
    nb = nbformat.read(path, as_version=4)
    first_check = next(i for i, c in enumerate(nb.cells) if CHECK in tags(c))
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    with pytest.raises(CellExecutionError) as stopped:
        client.execute()
    errors = [(i, o) for i, c in enumerate(nb.cells) for o in c.get("outputs", []) if o.output_type == "error"]
    failed, error = errors[0]
    assert failed == first_check, f"stopped at cell {failed}, not at the first check ({first_check}): {stopped.value}"
    assert error.ename == "NotYet" and error.traceback[0].startswith("NOT YET: ")
    assert noise(nb) == []


def test_the_copies_are_there():
    assert len(list(COPIES.glob("[0-9][0-9]_*.ipynb"))) >= 7, f"{COPIES}: run `make student` first"
