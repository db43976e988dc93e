"""Student copies: solutions and answers leave the notebooks, stubs and checks stay, solutions notebooks hold them."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from sprc_lib.course.exercises import NotYet, check
from sprc_lib.course.student import ANSWER, ANSWER_STUB, CHECK, SOLUTION, STUB_HEADER, split, student_copies, tags

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
        shown = "\n".join(c.source for c in student.cells if c.cell_type == "code")  # a statement may quote code
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
        lesson = "\n".join(c.source for c in course.cells if c.cell_type == "code" and SOLUTION not in tags(c))
        for source in (c.source for c in course.cells if tags(c) & {SOLUTION, ANSWER}):
            assert source in kept
            for line in source.splitlines():
                code = line.split("#")[0].strip()
                if len(code) > 12 and not code.startswith(("print(", "display(")) and code not in lesson \
                        and not code.endswith("= None"):  # what a stub sets too
                    assert code not in shown, f"{copies.student.name} shows solution code: {code}"
        for stub in (c.source for c in student.cells if c.source.startswith(STUB_HEADER)):
            assert all(isinstance(node, ast.Assign) for node in ast.parse(stub).body)


def test_a_folder_without_notebooks_gets_one_message_and_exit_code_2(tmp_path, capsys):
    from sprc_lib.course.student import main

    assert main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "no notebooks (*.ipynb) there" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
