"""The teacher's rubric, collected from the notebooks: what each exercise's check accepts, and how each conceptual
question is marked.

    python -m sprc_lib.course.rubric       (part of `make teaching`: writes the block in notebooks/TEACHING.md)

An exercise is worth a point, given by Otter's autograder when its check passes: the rubric states the check's hint
and the condition it tests. A question is marked by hand from the `*Marking (N points):*` paragraph that closes its
worked answer in the notebook, so the answer and its marking are written once, side by side. A test checks that
the block in TEACHING.md is the one the notebooks give.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from sprc_lib.course.lab_plan import NOTEBOOKS, TEACHING
from sprc_lib.course.reference import write_block
from sprc_lib.course.student import ANSWER, CHECK, check_parts, exercise_id, marking, question_id, tags

MARK = "rubric"
def chapter(path: Path) -> tuple[str, list[str], int]:
    """(title, rubric lines, points) of one notebook."""
    book = nbformat.read(path, as_version=4)
    title = book.cells[0].source.splitlines()[0].lstrip("# ").strip()
    lines, points, exercises, questions = [], 0, 0, 0
    for cell in book.cells:
        if CHECK in tags(cell):
            exercises += 1
            _, condition, hint = check_parts(cell.source)
            lines.append(f"- `{exercise_id(path.stem, exercises)}` (autograded, 1 point): {hint.rstrip('.')}. "
                         f"The check: `{condition}`.")
            points += 1
        elif ANSWER in tags(cell):
            questions += 1
            worth, how = marking(cell.source, f"{path.name}, question {questions}")
            lines.append(f"- `{question_id(path.stem, questions)}` (by hand, {worth} points): {how}")
            points += worth
    return title, lines, points


def rubric(notebooks: Path = NOTEBOOKS) -> str:
    parts = ["Each exercise is worth a point, which Otter's autograder gives when its check passes (the check "
             "compares the student's values with the library's, computed from the same notebook; `answers.*` is "
             "`sprc_lib/course/answers.py`). The prose question that closes some exercises (\"which works better "
             "here?\") is for discussion, not marked. Each conceptual question is marked by hand from its worked "
             "answer in the solved notebook (`build/autograder/`)."]
    total = 0
    for path in sorted(notebooks.glob("[0-9][0-9]_*.ipynb")):
        title, lines, points = chapter(path)
        parts.append(f"**{title}** ({points} points)\n\n" + "\n".join(lines))
        total += points
    parts.append(f"In all: {total} points.")
    return "\n\n".join(parts)


def main() -> int:
    try:
        text = rubric()
    except ValueError as err:  # a worked answer without its marking, a malformed check
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_block(TEACHING, text, MARK)
    print(f"wrote the rubric into {TEACHING}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
