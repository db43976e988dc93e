"""Student copies of the course, made by Otter-Grader (`otter assign`): notebooks without their solutions for the
students, and solved notebooks with an autograder for the teacher.

A course notebook marks its exercise cells by tags: `solution` (the worked answer, code), `check` (the
`check(...)` that follows every solution, which nbval runs on the course) and `answer` (a Markdown answer to a
conceptual question). This module writes each course notebook in Otter's assignment format (an exercise is an
autograded question: the solution, with a prompt of the names the check reads; the check's condition as its test,
the hint as the test's failure message; a conceptual question is a manually graded one) and runs `otter assign`
on it. The students' folder gets the notebook, whose checks call `grader.check(...)`, and the public tests
(`tests/`); the answers and solved notebooks go to the teacher's folder only. Hiding cells is not enough: Colab,
GitHub and an HTML export show hidden cells.

    python -m sprc_lib.course.student notebooks build/student build/autograder    # what `make student` runs
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from sprc_lib.course.colab import CELL_MARK, COURSE_SOURCE
from sprc_lib.files import atomic_path

SOLUTION, CHECK, ANSWER = "solution", "check", "answer"
OWNED = ".sprc-student"  # in each folder `make student` writes: its next run may clear that folder
HAND_OUT = "sprc-student.zip"  # the student folder zipped, in the teacher's folder: what to hand out
# The course notebooks' Colab badge opens the course's own copy, solutions and all: the copies say how to open them.
BADGE = re.compile(r"\n*\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
OPEN_A_COPY = ("\n\n*On Colab: File > Open notebook > Google Drive, then this notebook in the student folder you "
               "unzipped into your Drive.*")
MARKING = re.compile(r"\*Marking \((\d+) points?\):\* (.+)", re.S)  # closes every worked answer: the rubric
STUB_HEADER = "# your code here: replace each ... below, then run this cell and the check under it"
# What Otter's assignment format needs besides the questions: the checks run the tests in tests/ (public, beside
# the copies); no export cell or PDF (grading runs the notebook itself). `grader` is made by INIT_CELL, after the
# Colab install cell (Otter's own init cell would come first, before Colab has Otter).
CONFIG = {"init_cell": "false", "check_all_cell": "false", "export_cell": "false", "run_tests": "false",
          "solutions_pdf": "false", "generate": "true",
          "requirements": json.dumps([f"sprc-course[course] @ {COURSE_SOURCE}"])}  # a grader's image installs it
INIT_CELL = '''# The exercises' checks (Otter-Grader) read their tests from tests/, beside this notebook. On Colab:
# unzip the student folder into your Drive and name it here; the cell mounts Drive (it asks to be allowed).
import os
import sys

import otter

STUDENT_FOLDER = "/content/drive/MyDrive/sprc-student"  # Colab only: where your copy of the student folder is
folder = "."
if "google.colab" in sys.modules:
    from google.colab import drive

    drive.mount("/content/drive")
    folder = STUDENT_FOLDER
    if not os.path.isdir(f"{{folder}}/tests"):
        raise SystemExit(f"{{folder}}: no tests/ folder there. Fix: set STUDENT_FOLDER to the folder on your Drive "
                         "that holds this notebook and its tests/, then run this cell again.")
grader = otter.Notebook(f"{{folder}}/{name}.ipynb", tests_dir=f"{{folder}}/tests")'''


class CopiesError(Exception):
    """An output folder `make student` may not clear."""


@dataclass
class Copies:
    """What `student_copies` wrote for one notebook."""

    student: Path  # the student's notebook; its public tests are in the tests/ folder beside it
    solved: Path  # the teacher's: every solution and answer in place
    autograder: Path  # the teacher's: `otter run -a <this zip> <a student's notebook>` grades it
    exercises: int
    answers: int


def tags(cell: NotebookNode) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def assigned_names(source: str) -> dict[str, None]:
    """Names a cell binds at top level (assignments, loops, defs), in the order it binds them."""
    names: dict[str, None] = {}
    for node in ast.parse(source).body:
        targets = [node] if isinstance(node, ast.FunctionDef | ast.ClassDef) else []
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign | ast.For | ast.With):
            targets = [node]
        for target in targets:
            if isinstance(target, ast.FunctionDef | ast.ClassDef):
                names.setdefault(target.name)
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    names.setdefault(sub.id)
    return names


def read_names(source: str) -> list[str]:
    """Names a check reads from the notebook, in the order it first reads them: not those it binds itself (a
    comprehension's or lambda's variables, `:=`, an assignment), which are no answer a student writes."""
    tree = ast.parse(source)
    bound = {a.arg for n in ast.walk(tree) if isinstance(n, ast.Lambda) for a in n.args.args} | set(
        assigned_names(source))
    for node in ast.walk(tree):
        targets = [node.target] if isinstance(node, ast.comprehension | ast.NamedExpr) else []
        bound |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    loads = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)),
                   key=lambda n: (n.lineno, n.col_offset))
    return [name for name in dict.fromkeys(n.id for n in loads) if name not in bound]


def stub(solution: str, check_source: str) -> str:
    """The student's cell: the names the check reads that the solution sets, each `...`, in the order the check
    reads them (the exercise's order), under a header saying what to do."""
    assigned = assigned_names(solution)
    wanted = [name for name in read_names(check_source) if name in assigned]
    if not wanted:
        raise ValueError(f"this check reads nothing its solution sets:\n{check_source}")
    return "\n".join([STUB_HEADER, *(f"{name} = ..." for name in wanted)])


def check_parts(source: str) -> tuple[list[str], str, str]:
    """(statements before the check, its condition, its hint) of a `check(lambda: condition, hint)` cell."""
    tree = ast.parse(source)
    calls = [n for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
             and isinstance(n.value.func, ast.Name) and n.value.func.id == "check"]
    if len(calls) != 1 or len(calls[0].value.args) != 2 or not isinstance(calls[0].value.args[0], ast.Lambda):
        raise ValueError(f"a check cell holds one check(lambda: condition, hint):\n{source}")
    condition, hint = calls[0].value.args
    if not isinstance(hint, ast.Constant) or not isinstance(hint.value, str):
        raise ValueError(f"a check's hint is a plain string:\n{source}")
    return [ast.unparse(n) for n in tree.body if n is not calls[0]], ast.unparse(condition.body), hint.value


def raw(*lines: str) -> NotebookNode:
    return nbformat.v4.new_raw_cell("\n".join(lines))


def exercise(name: str, solution: NotebookNode, check_cell: NotebookNode) -> list[NotebookNode]:
    """An autograded question in Otter's format: the solution under a prompt of the stub's names, the check's
    condition as the test, its hint as the test's failure message (JSON is a YAML string)."""
    setup, condition, hint = check_parts(check_cell.source)
    prompted = nbformat.v4.new_code_cell("\n".join(['""" # BEGIN PROMPT', stub(solution.source, check_cell.source),
                                                    '""" # END PROMPT', "# BEGIN SOLUTION NO PROMPT",
                                                    solution.source, "# END SOLUTION"]))
    test = nbformat.v4.new_code_cell("\n".join(['""" # BEGIN TEST CONFIG', f"failure_message: {json.dumps(hint)}",
                                                '""" # END TEST CONFIG', *setup, f"assert {condition}"]))
    return [raw("# BEGIN QUESTION", f"name: {name}", "points: 1"), raw("# BEGIN SOLUTION"), prompted,
            raw("# END SOLUTION"), raw("# BEGIN TESTS"), test, raw("# END TESTS"), raw("# END QUESTION")]


def marking(answer: str, where: str) -> tuple[int, str]:
    """(points, how to award them) from the `*Marking (N points):*` paragraph that closes a worked answer."""
    found = MARKING.search(answer)
    if not found:
        raise ValueError(f"{where}: the worked answer has no '*Marking (N points):*' paragraph")
    return int(found.group(1)), " ".join(found.group(2).split())


def question(name: str, answer: NotebookNode) -> list[NotebookNode]:
    """A manually graded question in Otter's format: the worked answer, with its marking, is its solution."""
    points, _ = marking(answer.source, name)
    return [raw("# BEGIN QUESTION", f"name: {name}", "manual: true", f"points: {points}"), raw("# BEGIN SOLUTION"),
            plain(answer), raw("# END SOLUTION"), raw("# END QUESTION")]


def plain(cell: NotebookNode) -> NotebookNode:
    """A copy of `cell` shown in full, without the exercise tags."""
    cell = copy.deepcopy(cell)
    cell.metadata.pop("jupyter", None)
    kept = [t for t in cell.metadata.get("tags", []) if t not in (SOLUTION, CHECK, ANSWER)]
    if kept:
        cell.metadata["tags"] = kept
    else:
        cell.metadata.pop("tags", None)
    return cell


def exercise_id(notebook: str, k: int) -> str:
    """The name of a notebook's k-th exercise (from 1) in Otter, the tests and the rubric: unique over the course,
    so that every chapter's tests share one tests/ folder."""
    return f"ch{notebook[:2]}_ex{k}"


def question_id(notebook: str, k: int) -> str:
    """The name of a notebook's k-th conceptual question (from 1)."""
    return f"ch{notebook[:2]}_q{k}"


def otter_master(nb: NotebookNode, name: str) -> tuple[NotebookNode, int, int]:
    """(the notebook in Otter's assignment format, exercises, answers)."""
    config = [f"name: {name}", *(f"{k}: {v}" for k, v in CONFIG.items()), "tests:", "  files: true"]
    master = nbformat.v4.new_notebook(metadata=copy.deepcopy(nb.metadata), cells=[raw("# ASSIGNMENT CONFIG", *config)])
    exercises = answers = 0
    installs = [i for i, cell in enumerate(nb.cells) if cell.source.startswith(CELL_MARK)]
    init_after = installs[0] if installs else 0  # after the title when a notebook has no install cell
    for i, cell in enumerate(nb.cells):
        kind = tags(cell)
        if SOLUTION in kind:
            following = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
            if following is None or CHECK not in tags(following):
                raise ValueError(f"{name}: the solution in cell {i} has no check cell (tagged {CHECK!r}) after it")
            exercises += 1
            master.cells += exercise(exercise_id(name, exercises), cell, following)
        elif CHECK in kind:
            if i == 0 or SOLUTION not in tags(nb.cells[i - 1]):
                raise ValueError(f"{name}: the check in cell {i} follows no solution (tagged {SOLUTION!r})")
        elif ANSWER in kind:
            answers += 1
            master.cells += question(question_id(name, answers), cell)
        else:
            master.cells.append(copy.deepcopy(cell))
            if i == 0:
                master.cells[-1].source = BADGE.sub(lambda _: OPEN_A_COPY, cell.source, count=1)
        if i == init_after:
            master.cells.append(nbformat.v4.new_code_cell(INIT_CELL.format(name=name)))
    return master, exercises, answers


def assign(master: NotebookNode, name: str, student: Path, teacher: Path) -> None:
    """Run `otter assign` on `master`; move its student notebook and public tests to `student`, its solved
    notebook, tests and autograder zip (`<name>-autograder.zip`) to `teacher`."""
    from otter.assign import main as otter_assign  # the course extra's tool: only `make student` needs it

    with tempfile.TemporaryDirectory(prefix="sprc-otter-") as scratch:
        source, result = Path(scratch) / f"{name}.ipynb", Path(scratch) / "dist"
        nbformat.write(master, source)
        otter_assign(str(source), str(result), no_pdfs=True, no_run_tests=True)
        for side, out in (("student", student), ("autograder", teacher)):
            (out / "tests").mkdir(parents=True, exist_ok=True)
            for test in (result / side / "tests").glob("*.py"):
                shutil.move(test, out / "tests" / test.name)
            shutil.move(result / side / f"{name}.ipynb", out / f"{name}.ipynb")
        # without the time Otter stamps on it
        shutil.move(next((result / "autograder").glob("*.zip")), teacher / f"{name}-autograder.zip")


def check_owned(out: Path) -> None:
    """Refuse a non-empty folder this module did not write: `make student` replaces its own folders whole (so
    nothing from an earlier version, such as a solutions folder, is handed out), and never anyone else's."""
    if out.exists() and any(out.iterdir()) and not (out / OWNED).is_file():
        raise CopiesError(f"{out}: not empty, and not written by `make student` (no {OWNED} in it); delete it, or "
                          "give an empty or new folder")


def student_copies(notebooks: str | Path, student: str | Path, teacher: str | Path) -> list[Copies]:
    """Every course notebook (`NN_*.ipynb`) as a student copy under `student` and a solved one under `teacher`.
    Both folders are written beside their places and replace them at the end: a stopped run leaves the old
    copies whole, never a half-written folder to hand out."""
    paths = sorted(Path(notebooks).glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"{notebooks}: no course notebooks (NN_*.ipynb) found")
    student, teacher = Path(student), Path(teacher)
    for out in (student, teacher):
        check_owned(out)
        out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with atomic_path(student) as student_tmp, atomic_path(teacher) as teacher_tmp:
        for tmp in (student_tmp, teacher_tmp):
            tmp.mkdir()
            (tmp / OWNED).write_text("written by `make student` (sprc_lib.course.student); replaced by its next run\n")
        for path in paths:
            master, exercises, answers = otter_master(nbformat.read(path, as_version=4), path.stem)
            assign(master, path.stem, student_tmp, teacher_tmp)
            written.append(Copies(student / f"{path.stem}.ipynb", teacher / f"{path.stem}.ipynb",
                                  teacher / f"{path.stem}-autograder.zip", exercises, answers))
        hand_out(student_tmp, teacher_tmp / HAND_OUT)
    return written


def hand_out(student: Path, zipped: Path) -> Path:
    """The student folder as one zip for Drive or an LMS, unzipping to `sprc-student/` (Colab's default
    STUDENT_FOLDER is MyDrive/sprc-student)."""
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(student.rglob("*")):
            if file.is_file() and file.name != OWNED:
                archive.write(file, f"{Path(HAND_OUT).stem}/{file.relative_to(student).as_posix()}")
    return zipped


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m sprc_lib.course.student NOTEBOOKS STUDENT_OUT TEACHER_OUT", file=sys.stderr)
        return 2
    if not list(Path(argv[0]).glob("[0-9][0-9]_*.ipynb")):
        print(f"error: {argv[0]}: no course notebooks (NN_*.ipynb) there; pass the course's notebooks/ folder",
              file=sys.stderr)
        return 2
    try:
        written = student_copies(*argv)
    except (CopiesError, ValueError) as err:  # a folder it may not replace; a notebook's exercise cells malformed
        print(f"error: {err}", file=sys.stderr)
        return 2
    for c in written:
        print(f"{c.student}: {c.exercises} exercises (tests in {c.student.parent / 'tests'}) and {c.answers} "
              f"questions; solved in {c.solved}, graded by {c.autograder}")
    print(f"hand out {argv[1]} (zipped: {Path(argv[2]) / HAND_OUT}); keep {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
