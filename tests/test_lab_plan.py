"""The teacher's labs (notebooks/TEACHING.md) are laid out from the notebooks: their sections, in order, with the
reading time their words and code give, and a buffer in each lab."""

from __future__ import annotations

import re

import nbformat

from sprc_lib.course import lab_plan
from sprc_lib.course.reference import doc_block


def test_sections_split_at_headings_and_leave_solutions_out():
    book = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title\n\nfour words of intro\n\n## 1. First\n\nthree more words"),
        nbformat.v4.new_code_cell("x = 1\n\ny = 2\n", metadata={"execution": {
            "iopub.execute_input": "2026-01-01T00:00:00.000Z", "shell.execute_reply": "2026-01-01T00:00:02.500Z"}}),
        nbformat.v4.new_code_cell("secret = 42", metadata={"tags": ["solution"]}),
        nbformat.v4.new_markdown_cell("## Exercises\n\none two"),
    ])
    setup, first, exercises = lab_plan.sections(book, "99_x")
    assert (setup.name, setup.words) == ("set-up", 6)  # "# Title" counts two words
    assert (first.name, first.title, first.words, first.code_lines, first.compute_s) == ("1", "1. First", 3, 2, 2.5)
    assert (exercises.name, exercises.words, exercises.code_lines) == ("Exercises", 2, 0)
    assert first.core and not exercises.core


def test_teaching_holds_the_labs_of_these_notebooks_each_with_a_buffer():
    block = doc_block(lab_plan.TEACHING, lab_plan.MARK)
    assert block, "notebooks/TEACHING.md has no labs block: run make teaching"
    rows = [line.split("  ") for line in block.splitlines() if re.match(r"^\d\d  ", line)]
    written = [(r[0], next(c.strip() for c in r[1:] if c.strip()), [c.strip() for c in r if c.strip()][2:4])
               for r in rows]
    expected = []
    for names in lab_plan.LABS.values():
        for name in names:
            for s in lab_plan.sections(nbformat.read(lab_plan.NOTEBOOKS / f"{name}.ipynb", as_version=4), name):
                if s.name not in (*lab_plan.HOMEWORK, "Further reading"):
                    expected.append((name[:2], s.title, ["core" if s.core else "optional",
                                                          lab_plan._minutes(s.reading_min)]))
    assert written == expected, "the labs are stale: run make teaching"
    totals = lab_plan.lab_totals(block)
    assert list(totals) == list(lab_plan.LABS)
    assert all(buffer >= lab_plan.MIN_BUFFER for _, buffer in totals.values()), totals
