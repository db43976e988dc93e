"""Exercise checks: the cell after each exercise's solution says whether the answer is right.

In the course notebooks the check passes on the worked solution (so nbval proves the solution still
holds); in a student copy (`sprc_lib.course.student`) the solution is replaced by a stub and the same
check stops the notebook there with a hint, until the student's code gives a right answer.
"""

from __future__ import annotations

from collections.abc import Callable

from sprc_lib.course.setup import CourseStop


class NotYet(CourseStop):
    """An exercise's answer is missing or wrong; shown as its hint alone."""

    def _render_traceback_(self) -> list[str]:
        return [f"NOT YET: {self}"]


def check(ok: Callable[[], object], hint: str) -> None:
    """Raise `NotYet(hint)` unless `ok()` is true; an error inside `ok` (an answer still `None`) counts as not yet.

    `ok` is a function so that a stub's `None` (or a half-written answer) fails with the hint, not with a
    `TypeError` from the comparison.
    """
    try:
        passed = bool(ok())
    except Exception as error:  # the student's answer is incomplete: say what is wanted, not where it broke
        raise NotYet(f"{hint} (checking raised {type(error).__name__}: {error})") from None
    if not passed:
        raise NotYet(hint)
    print("✓ right")
