"""The first demo's rule (notebook 00): the first query with its target in the top k, else the best-ranked one."""

from __future__ import annotations

import pytest

from sprc_lib.course.explorer import Query, Retrieval
from sprc_lib.course.tour import first_in_top, pick_title, recall_and_chance


def result(rank: int | None, ranked: int = 100) -> Retrieval:
    target = None if rank is None else "t"
    return Retrieval(Query("ref", "make it red", target), ["a", "b", "c", "d", "e"], [0.5] * 5, rank, ranked)


def test_the_first_hit_in_order_wins_over_a_better_later_one():
    results = [result(9), result(4), result(1)]
    assert first_in_top(results, 5) == (1, results[1])


def test_without_a_hit_the_best_ranked_is_shown_the_earlier_on_a_tie():
    results = [result(12), result(7), result(30), result(7)]
    assert first_in_top(results, 5) == (1, results[1])


def test_queries_without_a_target_are_skipped_and_all_missing_is_an_error():
    results = [result(None), result(3)]
    assert first_in_top(results, 5) == (1, results[1])
    with pytest.raises(ValueError, match="known target"):
        first_in_top([result(None)], 5)


def test_the_title_says_the_rank_in_both_cases():
    hit = pick_title(2, result(4, 359), 5, 300)
    assert "val query 3 of 300" in hit and "first in file order" in hit and "target ranked 4 of 359" in hit
    miss = pick_title(0, result(8, 359), 5, 300)
    assert miss.startswith("no val query has its target in the top 5") and "target ranked 8 of 359" in miss


def test_recall_and_chance():
    recall, chance = recall_and_chance([result(1, 100), result(6, 100), result(None), result(5, 100)], 5)
    assert recall == pytest.approx(2 / 3) and chance == pytest.approx(0.05)
    assert recall_and_chance([result(2, 3)], 5) == (1.0, 1.0)  # a gallery smaller than k: chance is certain
