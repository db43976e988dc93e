"""The rubric in notebooks/TEACHING.md is collected from the notebooks: every exercise's check and every question's
marking paragraph, so that it cannot drift from what the checks accept and the worked answers say."""

from __future__ import annotations

import pytest

from sprc_lib.course import rubric
from sprc_lib.course.reference import doc_block
from sprc_lib.course.student import marking


def test_a_marking_paragraph_gives_the_points_and_how_to_award_them():
    answer = "**Answer.** Because.\n\n*Marking (2 points):* 1 for the cause;\n1 for the cost."
    assert marking(answer, "here") == (2, "1 for the cause; 1 for the cost.")
    with pytest.raises(ValueError, match="here: the worked answer has no"):
        marking("**Answer.** Because.", "here")


def test_teaching_holds_the_rubric_the_notebooks_give():
    block = doc_block(rubric.TEACHING, rubric.MARK)
    assert block.strip() == rubric.rubric().strip(), "notebooks/TEACHING.md: the rubric is stale; run make teaching"
    assert block.count("(autograded, 1 point)") == 24 and block.count("(by hand, 2 points)") == 16
