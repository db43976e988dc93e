"""The tour's first demo (notebook 00): which CIR query to show first, by a stated rule, and the recall beside chance.

A first demo should show the model working where it does, and say plainly how far down the target fell
where it does not, so the rule and its fallback live here, tested, and the notebook states them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sprc_lib.course.explorer import Retrieval


def _with_targets(results: Sequence[Retrieval]) -> list[tuple[int, Retrieval]]:
    ranked = [(i, r) for i, r in enumerate(results) if r.target_rank is not None]
    if not ranked:
        raise ValueError("none of these results has a known target: rank a split with targets (train or val)")
    return ranked


def first_in_top(results: Sequence[Retrieval], k: int) -> tuple[int, Retrieval]:
    """(index, result) of the first result, in order, whose target is in the top k; if none is, the best-ranked one.

    Ties in the fallback go to the earlier result, so the pick depends only on the ranks and their order.
    """
    ranked = _with_targets(results)
    for index, result in ranked:
        if result.target_rank <= k:
            return index, result
    return min(ranked, key=lambda pair: (pair[1].target_rank, pair[0]))


def pick_title(index: int, result: Retrieval, k: int, total: int) -> str:
    """The demo figure's title: which rule picked the query, and where its target is ranked, in either case."""
    rank = f"target ranked {result.target_rank} of {result.ranked}"
    if result.target_rank is not None and result.target_rank <= k:
        return f"val query {index + 1} of {total}, the first in file order with its target in the top {k}: {rank}"
    return f"no val query has its target in the top {k}; the best-ranked is query {index + 1} of {total}: {rank}"


def recall_and_chance(results: Sequence[Retrieval], k: int) -> tuple[float, float]:
    """(Recall@k, chance level) over the results with a target: the fraction in the top k, and k / ranked on average.

    The chance level is what a random ranking scores, the yardstick every number of the course is shown beside.
    """
    ranked = [r for _, r in _with_targets(results)]
    recall = sum(r.target_rank <= k for r in ranked) / len(ranked)
    chance = sum(min(k, r.ranked) / r.ranked for r in ranked) / len(ranked)
    return recall, chance
