"""Student copies of the course: the notebooks without their solutions, and one solutions notebook per chapter.

A course notebook marks its exercise cells by tags: `solution` (the worked answer, code), `check`
(the `check(...)` that follows every solution and stays in both copies) and `answer` (a Markdown answer
to a conceptual question). A student copy replaces each solution by a stub that sets the names its
check reads to `None`, so the check stops the notebook there with its hint until the student's code
is right, and each answer by a place to write one; `solutions/NN_..._solutions.ipynb` holds what was
taken out, each under its exercise's text. Hiding cells (`jupyter.source_hidden`) is not enough: Colab,
GitHub and an HTML export show hidden cells.

    python -m sprc_lib.course.student notebooks build/student      # what `make student` runs
"""

from __future__ import annotations

import ast
import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

SOLUTION, CHECK, ANSWER = "solution", "check", "answer"
STUB_HEADER = "# your code here: replace each None below, then run this cell and the check under it"
ANSWER_STUB = "*Your answer:* (double-click to write; the chapter's solutions notebook has one)"


@dataclass
class Copies:
    """What `student_copies` wrote for one notebook."""

    student: Path
    solutions: Path
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


def read_names(source: str) -> set[str]:
    """Names a check reads from the notebook: not those it binds itself (a comprehension's or lambda's
    variables, `:=`), which are no answer a student writes."""
    tree = ast.parse(source)
    bound = {a.arg for n in ast.walk(tree) if isinstance(n, ast.Lambda) for a in n.args.args}
    for node in ast.walk(tree):
        targets = [node.target] if isinstance(node, ast.comprehension | ast.NamedExpr) else []
        bound |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound


def stub(solution: str, check_source: str) -> str:
    """The student's cell: the names the check reads, each `None`, under a header saying what to do."""
    read = read_names(check_source)
    wanted = [name for name in assigned_names(solution) if name in read]  # in the order the solution computes them
    if not wanted:
        raise ValueError(f"this check reads nothing its solution sets:\n{check_source}")
    return "\n".join([STUB_HEADER, *(f"{name} = None" for name in wanted)])


def statement_of(cell: NotebookNode) -> NotebookNode:
    """An exercise's or question's own text: its Markdown cell from the last bold "Exercise"/"Question" on
    (the cell may begin with the end of the lesson before it)."""
    lines = cell.source.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(("**Exercise", "**Question"))]
    cell = plain(cell)
    if starts:
        cell.source = "\n".join(lines[starts[-1] :])
    return cell


def plain(cell: NotebookNode) -> NotebookNode:
    """A copy of `cell` shown in full, without the exercise tags."""
    cell = copy.deepcopy(cell)
    cell.metadata.pop("jupyter", None)
    kept = [t for t in cell.metadata.get("tags", []) if t not in (SOLUTION, ANSWER)]
    if kept:
        cell.metadata["tags"] = kept
    else:
        cell.metadata.pop("tags", None)
    return cell


def split(nb: NotebookNode, title: str) -> tuple[NotebookNode, NotebookNode, int, int]:
    """(student copy, solutions notebook, exercises, answers) of one course notebook."""
    student, solutions = copy.deepcopy(nb), nbformat.v4.new_notebook(metadata=copy.deepcopy(nb.metadata))
    solutions.cells.append(nbformat.v4.new_markdown_cell(
        f"# Solutions · {title}\n\nEach solution uses the variables of its chapter: run the chapter up to the "
        "exercise, then paste the solution in place of the stub."))
    cells, exercises, answers = nb.cells, 0, 0
    student.cells = []
    for i, cell in enumerate(cells):
        kind = tags(cell)
        statement = next((c for c in reversed(cells[:i]) if c.cell_type == "markdown" and not tags(c)), None)
        if SOLUTION in kind:
            check_cell = cells[i + 1] if i + 1 < len(cells) else None
            if check_cell is None or CHECK not in tags(check_cell):
                raise ValueError(f"{title}: the solution in cell {i} has no check cell (tagged {CHECK!r}) after it")
            student.cells.append(nbformat.v4.new_code_cell(stub(cell.source, check_cell.source)))
            solutions.cells += [statement_of(statement), plain(cell), plain(check_cell)] if statement else [plain(cell)]
            exercises += 1
        elif ANSWER in kind:
            student.cells.append(nbformat.v4.new_markdown_cell(ANSWER_STUB))
            solutions.cells += [statement_of(statement), plain(cell)] if statement else [plain(cell)]
            answers += 1
        else:
            student.cells.append(copy.deepcopy(cell))
    return student, solutions, exercises, answers


def student_copies(notebooks: str | Path, out: str | Path) -> list[Copies]:
    """Write `out/NN_*.ipynb` (no solutions) and `out/solutions/NN_*_solutions.ipynb` for every course notebook."""
    out = Path(out)
    (out / "solutions").mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(Path(notebooks).glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        title = nb.cells[0].source.splitlines()[0].lstrip("# ").strip()
        student, solutions, exercises, answers = split(nb, title)
        target, key = out / path.name, out / "solutions" / f"{path.stem}_solutions.ipynb"
        nbformat.write(student, target)
        nbformat.write(solutions, key)
        written.append(Copies(target, key, exercises, answers))
    if not written:
        raise FileNotFoundError(f"{notebooks}: no course notebooks (NN_*.ipynb) found")
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m sprc_lib.course.student NOTEBOOKS OUT", file=sys.stderr)
        return 2
    if not list(Path(argv[0]).glob("*.ipynb")):
        print(f"error: {argv[0]}: no notebooks (*.ipynb) there; pass the course's notebooks/ folder", file=sys.stderr)
        return 2
    for c in student_copies(*argv):
        print(f"{c.student}: {c.exercises} exercises and {c.answers} answers moved to {c.solutions}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
