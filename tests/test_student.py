"""Student copies: solutions and answers leave the notebooks, stubs and checks stay, solutions notebooks hold them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from sprc_lib.course.exercises import NotYet, check
from sprc_lib.course.student import (
    ANSWER,
    ANSWER_STUB,
    CHECK,
    SOLUTION,
    STUB_HEADER,
    read_names,
    split,
    student_copies,
    tags,
)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def cell(kind: str, source: str, *tag: str) -> nbformat.NotebookNode:
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    return make(source, metadata={"tags": list(tag), "jupyter": {"source_hidden": True}} if tag else {})


def chapter() -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[
        cell("markdown", "# 09 · A chapter"),
        cell("code", "x = 3"),
        cell("markdown", "**Exercise 1.** Square x."),
        cell("code", "import math\nsquare = x * x\nprint(math.pi)", SOLUTION),
        cell("code", 'check(lambda: square == 9, "square is x times x")', CHECK),
        cell("markdown", "**Question 1.** Why?"),
        cell("markdown", "**Answer.** Because.", ANSWER),
    ])


def test_a_solution_becomes_a_stub_of_the_names_its_check_reads_and_moves_to_the_solutions():
    student, solutions, exercises, answers = split(chapter(), "09 · A chapter")
    sources = [c.source for c in student.cells]
    assert (exercises, answers) == (1, 1)
    assert sources[3] == f"{STUB_HEADER}\nsquare = None"
    assert sources[4] == 'check(lambda: square == 9, "square is x times x")'
    assert "Because" not in "\n".join(sources) and "x * x" not in "\n".join(sources)
    kept = [c.source for c in solutions.cells]
    assert kept[1:] == ["**Exercise 1.** Square x.", "import math\nsquare = x * x\nprint(math.pi)",
                        'check(lambda: square == 9, "square is x times x")',
                        "**Question 1.** Why?", "**Answer.** Because."]
    assert all("jupyter" not in c.metadata and SOLUTION not in tags(c) for c in solutions.cells)


def test_a_solution_without_its_check_is_refused():
    nb = chapter()
    del nb.cells[4]
    with pytest.raises(ValueError, match="no check cell"):
        split(nb, "09")


def test_the_check_passes_a_right_answer_and_stops_a_stub_with_its_hint(capsys):
    check(lambda: 3 * 3 == 9, "never shown")
    assert "right" in capsys.readouterr().out
    square = None
    with pytest.raises(NotYet, match="square is x times x"):
        check(lambda: square + 0 == 9, "square is x times x")  # None + 0: a TypeError, shown as the hint
    with pytest.raises(NotYet) as stopped:
        check(lambda: square == 9, "square is x times x")
    assert stopped.value._render_traceback_() == ["NOT YET: square is x times x"]


def test_the_course_copies_hold_no_solution_code_and_every_exercise_and_question_is_in_a_solutions_notebook(tmp_path):
    written = student_copies(NOTEBOOKS, tmp_path)
    assert [c.student.name for c in written] == sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    for copies in written:
        course = nbformat.read(NOTEBOOKS / copies.student.name, as_version=4)
        student = nbformat.read(copies.student, as_version=4)
        solutions = nbformat.read(copies.solutions, as_version=4)
        kept = "\n".join(c.source for c in solutions.cells)
        assert copies.exercises >= 3 and copies.answers >= 2, copies.student.name
        assert not any(tags(c) & {SOLUTION, ANSWER} for c in student.cells)
        # Every other cell is the course's own, in order: nbval's run of the course runs the copy's lesson.
        assert [c for c in student.cells if not c.source.startswith((STUB_HEADER, ANSWER_STUB))] == [
            c for c in course.cells if not tags(c) & {SOLUTION, ANSWER}], copies.student.name
        assert sum(CHECK in tags(c) for c in student.cells) == copies.exercises
        assert any("try" in tags(c) for c in student.cells), f"{copies.student.name}: no 'try it' cell"
        answers = [c.source for c in course.cells if ANSWER in tags(c)]
        assert not any(a in "\n".join(c.source for c in student.cells) for a in answers), copies.student.name
        lesson = set().union(*(forms(c.source) for c in course.cells
                               if c.cell_type == "code" and not tags(c) & {SOLUTION, CHECK}))
        shown_code = set().union(*(forms(c.source) for c in student.cells if c.cell_type == "code"))
        shown_text = squash("\n".join(c.source for c in student.cells))  # hints, statements
        for source in (c.source for c in course.cells if tags(c) & {SOLUTION, ANSWER}):
            assert source in kept
        for source in (c.source for c in course.cells if SOLUTION in tags(c)):
            for code in solution_code(source) - lesson:  # what the lesson itself shows is no leak
                assert code not in shown_code and code not in shown_text, f"{copies.student.name} shows: {code}"
        stubs = [(c, student.cells[i + 1]) for i, c in enumerate(student.cells) if c.source.startswith(STUB_HEADER)]
        for stub, check_cell in stubs:
            body = ast.parse(stub.source).body
            assert CHECK in tags(check_cell) and body and all(isinstance(node, ast.Assign) for node in body)
            names = {t.id for node in body for t in node.targets}
            # only what the student computes: each name the check reads from the notebook, none it binds itself
            assert names <= read_names(check_cell.source), f"{copies.student.name}: a stub sets {names}"


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def forms(source: str) -> set[str]:
    """Every statement and expression of a cell, unparsed and without spaces."""
    return {squash(ast.unparse(n)) for n in ast.walk(ast.parse(source)) if isinstance(n, ast.stmt | ast.expr)}


def solution_code(source: str) -> set[str]:
    """What a solution computes: each simple statement (a line of code) and each value it assigns, unparsed
    and without spaces. Too plain to give anything away: shorter than 13 characters (`x = None`), or a name
    the exercise points to (`retriever.all_scores()`, an attribute, a call without arguments)."""
    code = set()
    for node in ast.walk(ast.parse(source)):
        value = getattr(node, "value", None)
        plain = isinstance(value, ast.Name | ast.Attribute) or (
            isinstance(value, ast.Call) and not value.args and not value.keywords)
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign) and value is not None and not plain:
            code.add(squash(ast.unparse(value)))
        if isinstance(node, ast.Expr | ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Return | ast.Delete):
            code.add(squash(ast.unparse(node)))
    return {c for c in code if len(c) > 12 and not c.startswith(("print(", "display("))}


def test_a_folder_without_notebooks_gets_one_message_and_exit_code_2(tmp_path, capsys):
    from sprc_lib.course.student import main

    assert main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "no notebooks (*.ipynb) there" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
