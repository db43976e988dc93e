"""Student copies (Otter-Grader): solutions and answers leave the students' notebooks, stubs and checks stay, the
teacher's solved notebooks and autograder hold the rest."""

from __future__ import annotations

import ast
import re
import zipfile
from pathlib import Path

import nbformat
import pytest

from sprc_lib.course.exercises import NotYet, check
from sprc_lib.course.student import (
    ANSWER,
    BADGE,
    CHECK,
    HAND_OUT,
    INIT_CELL,
    OPEN_A_COPY,
    OWNED,
    SOLUTION,
    STUB_HEADER,
    check_parts,
    otter_master,
    read_names,
    stub,
    student_copies,
    tags,
)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
OTTER_ANSWER = "otter_answer_cell"  # Otter's tag on the cells a student writes in


def cell(kind: str, source: str, *tag: str) -> nbformat.NotebookNode:
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    return make(source, metadata={"tags": list(tag), "jupyter": {"source_hidden": True}} if tag else {})


def chapter() -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                             "language": "python"}}, cells=[
        cell("markdown", "# 09 · A chapter"),
        cell("code", "x = 3"),
        cell("markdown", "**Exercise 1.** Square x."),
        cell("code", "import math\nsquare = x * x\nprint(math.pi)", SOLUTION),
        cell("code", 'check(lambda: square == 9, "square is \\"x\\" times x")', CHECK),
        cell("markdown", "**Question 1.** Why?"),
        cell("markdown", "**Answer.** Because.\n\n*Marking (2 points):* 1 for why, 1 for how.", ANSWER),
    ])


def sources(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells]


def test_a_solution_becomes_a_stub_of_the_names_its_check_reads_and_its_check_an_otter_test(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(chapter(), notebooks / "09_chapter.ipynb")
    [written] = student_copies(notebooks, tmp_path / "student", tmp_path / "teacher")
    assert (written.exercises, written.answers) == (1, 1)
    student = sources(written.student)
    assert f"{STUB_HEADER}\nsquare = ..." in student
    assert 'grader.check("ch09_ex1")' in student and student[1] == INIT_CELL.format(name="09_chapter")
    assert not any(w in "\n".join(student) for w in ("Because", "x * x", "check(lambda"))
    test = (tmp_path / "student" / "tests" / "ch09_ex1.py").read_text()
    assert "assert square == 9" in test and 'square is "x" times x' in test and "x * x" not in test
    solved = "\n".join(sources(written.solved))
    assert "square = x * x" in solved and "Because." in solved
    assert written.autograder.name == "09_chapter-autograder.zip" and written.autograder.is_file()
    with zipfile.ZipFile(tmp_path / "teacher" / HAND_OUT) as archive:  # the student folder, for Drive
        assert sorted(archive.namelist()) == ["sprc-student/09_chapter.ipynb", "sprc-student/tests/ch09_ex1.py"]


def test_a_new_run_clears_its_own_folders_and_refuses_anyone_elses(tmp_path, capsys):
    from sprc_lib.course.student import main

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(chapter(), notebooks / "09_chapter.ipynb")
    args = [str(notebooks), str(tmp_path / "student"), str(tmp_path / "teacher")]
    assert main(args) == 0
    stale = tmp_path / "student" / "solutions" / "09_chapter_solutions.ipynb"  # an older version's layout
    stale.parent.mkdir()
    stale.write_text("{}")
    assert main(args) == 0 and not stale.exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a teacher's own file")
    assert main([str(notebooks), str(foreign), str(tmp_path / "teacher")]) == 2
    assert "not written by `make student`" in capsys.readouterr().err and (foreign / "notes.txt").is_file()


def test_a_solution_without_its_check_and_a_check_without_its_solution_are_refused():
    nb = chapter()
    del nb.cells[4]
    with pytest.raises(ValueError, match="no check cell"):
        otter_master(nb, "09_chapter")
    nb = chapter()
    del nb.cells[3]
    with pytest.raises(ValueError, match="follows no solution"):
        otter_master(nb, "09_chapter")


def test_a_stub_holds_what_the_check_reads_in_the_checks_order_and_nothing_the_check_binds():
    solution = "import math\nhelper = 2\nunknown = []\nnames = [math.pi * helper]\n"
    check_source = 'check(lambda: names == [x for x in key(unknown)] and (n := len(names)) > 0, "hint")'
    assert read_names(check_source) == ["check", "names", "key", "unknown", "len"]
    assert stub(solution, check_source) == f"{STUB_HEADER}\nnames = ...\nunknown = ..."


def test_a_check_becomes_its_statements_its_condition_and_its_hint():
    assert check_parts('WORDS = {"a"}\ncheck(lambda: len(WORDS) == n, "n " "words")') == (
        ["WORDS = {'a'}"], "len(WORDS) == n", "n words")
    with pytest.raises(ValueError, match="one check"):
        check_parts("assert n == 1")


def test_the_check_passes_a_right_answer_and_stops_a_stub_with_its_hint(capsys):
    check(lambda: 3 * 3 == 9, "never shown")
    assert "right" in capsys.readouterr().out
    square = None
    with pytest.raises(NotYet, match="square is x times x"):
        check(lambda: square + 0 == 9, "square is x times x")  # None + 0: a TypeError, shown as the hint
    with pytest.raises(NotYet) as stopped:
        check(lambda: square == 9, "square is x times x")
    assert stopped.value._render_traceback_() == ["NOT YET: square is x times x"]


def test_the_course_copies_hold_no_solution_code_and_every_exercise_and_question_is_in_the_teachers_notebooks(
        tmp_path):
    written = student_copies(NOTEBOOKS, tmp_path / "student", tmp_path / "teacher")
    assert [c.student.name for c in written] == sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    handed_out = {p.relative_to(tmp_path / "student").as_posix() for p in (tmp_path / "student").rglob("*")
                  if p.is_file()}
    tests = {f"tests/ch{c.student.name[:2]}_ex{i}.py" for c in written for i in range(1, c.exercises + 1)}
    assert handed_out == {c.student.name for c in written} | tests | {OWNED}  # no solved notebook, no autograder
    for copies in written:
        course = nbformat.read(NOTEBOOKS / copies.student.name, as_version=4)
        student = nbformat.read(copies.student, as_version=4)
        solved = "\n".join(c.source for c in nbformat.read(copies.solved, as_version=4).cells)
        assert copies.exercises >= 3 and copies.answers >= 2, copies.student.name
        assert not any(tags(c) & {SOLUTION, CHECK, ANSWER} for c in student.cells)
        checks = [c.source for c in student.cells if c.source.startswith("grader.check(")]
        assert checks == [f'grader.check("ch{copies.student.name[:2]}_ex{i}")' for i in range(1, copies.exercises + 1)]
        # Every other cell is the course's own, in order: nbval's run of the course runs the copy's lesson.
        init = INIT_CELL.format(name=copies.student.stem)
        assert student.cells[2].source == init, "the checks' set-up comes after the Colab install cell"
        lesson = [c.source.removeprefix("<!-- END QUESTION -->\n\n") for c in student.cells
                  if OTTER_ANSWER not in tags(c) and not c.source.startswith("grader.check(") and c.source != init]
        own = [c.source for c in course.cells if not tags(c) & {SOLUTION, CHECK, ANSWER}]
        assert "colab.research.google.com" in own[0] and "colab.research.google.com" not in lesson[0]
        own[0] = BADGE.sub(lambda _: OPEN_A_COPY, own[0], count=1)  # the badge opens the course's solved notebook
        assert lesson == own, copies.student.name
        assert any("try" in tags(c) for c in student.cells), f"{copies.student.name}: no 'try it' cell"
        answers = [c.source for c in course.cells if ANSWER in tags(c)]
        assert not any(a in "\n".join(c.source for c in student.cells) for a in answers), copies.student.name
        lesson_code = set().union(*(forms(c.source) for c in course.cells
                                    if c.cell_type == "code" and not tags(c) & {SOLUTION, CHECK}))
        shown_code = set().union(*(forms(c.source) for c in student.cells if c.cell_type == "code"))
        shown_text = squash("\n".join(c.source for c in student.cells))  # hints, statements
        shown_tests = squash("\n".join(p.read_text() for p in (tmp_path / "student" / "tests").glob(
            f"ch{copies.student.name[:2]}_*.py")))  # the checks' conditions and hints
        for source in (c.source for c in course.cells if tags(c) & {SOLUTION, ANSWER}):
            assert source in solved
        for source in (c.source for c in course.cells if SOLUTION in tags(c)):
            for code in solution_code(source) - lesson_code:  # what the lesson itself shows is no leak
                assert code not in shown_code and code not in shown_text and code not in shown_tests, (
                    f"{copies.student.name} shows: {code}")
        stubs = [c for c in student.cells if c.cell_type == "code" and OTTER_ANSWER in tags(c)]
        course_checks = [c.source for c in course.cells if CHECK in tags(c)]
        assert len(stubs) == len(course_checks) == copies.exercises
        for given, check_source in zip(stubs, course_checks, strict=True):
            body = ast.parse(given.source).body
            assert given.source.startswith(STUB_HEADER) and body and all(
                isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and node.value.value is ...
                for node in body)
            names = {t.id for node in body for t in node.targets}
            # only what the student computes: each name the check reads from the notebook, none it binds itself
            assert names <= set(read_names(check_source)), f"{copies.student.name}: a stub sets {names}"


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

    assert main([str(tmp_path / "nowhere"), str(tmp_path / "out"), str(tmp_path / "key")]) == 2
    assert "no course notebooks (NN_*.ipynb) there" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "key").exists()
