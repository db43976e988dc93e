"""Retrieval metrics for CIRR and FashionIQ, as pure functions on score matrices.

Every function takes a float matrix `scores` of shape (Q, N) - query q against gallery image n,
higher is better - plus image names as lists of str. Nothing here knows about models or datasets,
so the trainer, the CLI, the notebooks and the tests all compute the same numbers the same way.

Tie rule (ours): each query ranks the gallery by descending score with a *stable* sort, so among
equal scores the image with the smaller gallery index comes first. A target tied with an earlier
gallery image therefore ranks after it. The reference implementations (SPRC `validate_blip.py`,
CLIP4Cir `validate.py`) sort `1 - score` with `torch.argsort(...)` (not stable) on the GPU: their order
among equal scores is unspecified, and `1 - score` in float32 can turn nearly equal scores into exact
ties. Both can only move images that are (nearly) tied, so the metrics agree except in those cases.

Recalls are in percent (0-100), as the reference logs them. The reference divides in float32
(`torch.sum(labels[:, :k]) / len(labels)`); we divide in float64, so figures may differ in the
sixth significant digit.
"""

from __future__ import annotations

import math
from statistics import harmonic_mean, mean
from typing import Literal

import torch
from torch import Tensor

CIRR_RECALL_KS = (1, 5, 10, 50)
CIRR_SUBSET_KS = (1, 2, 3)
FASHIONIQ_RECALL_KS = (10, 50)
# CIRR groups hold 6 images, one of them the reference: 5 remain to rank.
CIRR_SUBSET_SIZE = 5

# The key of each dataset's metrics dict that decides which checkpoint to keep (recipe table):
# CIRR: arithmetic mean of R@1,5,10,50 and Rs@1,2,3; FashionIQ: (mean R@10 + mean R@50) / 2.
KEEP_BEST_KEY = {"CIRR": "arithmetic_mean", "FashionIQ": "average"}
# What a result is summarised by, per dataset: the course's tables and curves show these.
HEADLINE_KEYS = {
    "CIRR": ("recall_at1", "recall_at10", "recall_at50", "recall_subset_at1"),
    "FashionIQ": ("average_recall_at10", "average_recall_at50"),
}


def _check_scores(scores: Tensor, gallery_names: list[str], n_queries: int) -> None:
    """Shapes must agree and no score may be NaN: a NaN would silently sort first."""
    if n_queries == 0:
        raise ValueError("no queries: recall is undefined")
    if scores.ndim != 2:
        raise ValueError(f"scores must be a (queries, gallery) matrix, got shape {tuple(scores.shape)}")
    if scores.shape != (n_queries, len(gallery_names)):
        raise ValueError(
            f"scores has shape {tuple(scores.shape)} but there are {n_queries} queries "
            f"and {len(gallery_names)} gallery names"
        )
    if scores.is_floating_point() and torch.isnan(scores).any():
        rows = torch.isnan(scores).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"scores contain NaN (queries {rows}{'...' if len(rows) == 5 else ''})")


def gallery_index(gallery_names: list[str]) -> dict[str, int]:
    """Name -> column of the score matrix; duplicate names would make a ranking ambiguous."""
    index: dict[str, int] = {}
    for i, name in enumerate(gallery_names):
        if name in index:
            raise ValueError(f"gallery name {name!r} appears twice (positions {index[name]} and {i})")
        index[name] = i
    return index


def _lookup(
    index: dict[str, int], names: list[str], role: str, reference_names: list[str] | None = None
) -> Tensor:
    """Gallery indices of one name per query, or a ValueError naming the query whose image is missing."""
    out = []
    for q, name in enumerate(names):
        if name not in index:
            query = f"query {q}" + (f" (reference {reference_names[q]!r})" if reference_names else "")
            raise ValueError(f"{query}: {role} {name!r} is not in the gallery")
        out.append(index[name])
    return torch.tensor(out, dtype=torch.long)


def rank_gallery(scores: Tensor, exclude: Tensor | None = None) -> Tensor:
    """Gallery indices per query, best first, ties broken by gallery index (stable sort).

    `exclude` (Q,) removes one gallery index from each query's ranking - CIRR's reference image -
    so the result is (Q, N - 1) instead of (Q, N).
    """
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    if exclude is None:
        return order
    keep = order != exclude.to(order.device).unsqueeze(1)
    return order[keep].view(order.shape[0], order.shape[1] - 1)


def cirr_rankings(
    scores: Tensor,
    gallery_names: list[str],
    reference_names: list[str],
    group_members: list[list[str]],
) -> tuple[Tensor, Tensor]:
    """CIRR's two rankings per query, as gallery indices, with the reference image removed.

    Returns `(order, subset_order)`: `order` (Q, N-1) ranks the whole gallery; `subset_order`
    (Q, S) ranks only the query's distinct group members other than the reference, in the same
    global order (S = 5 on CIRR). The metrics, the test-server files and the qualitative grids
    all read these, so they can never disagree. Turn indices into names with `index_names`.
    """
    n_queries = len(reference_names)
    _check_scores(scores, gallery_names, n_queries)
    if len(group_members) != n_queries:
        raise ValueError(f"{len(group_members)} groups for {n_queries} queries")
    index = gallery_index(gallery_names)
    refs = _lookup(index, reference_names, "reference")
    groups = []
    for q, (ref, members) in enumerate(zip(reference_names, group_members, strict=True)):
        # Distinct members other than the reference: the reference code keeps each gallery image once.
        group = []
        for name in members:
            if name not in index:
                raise ValueError(f"query {q} (reference {ref!r}): group member {name!r} not in the gallery")
            if name != ref and index[name] not in group:
                group.append(index[name])
        if groups and len(group) != len(groups[0]):
            raise ValueError(
                f"query {q} (reference {ref!r}) has {len(group)} group members besides "
                f"the reference, query 0 has {len(groups[0])}: groups must all be the same size"
            )
        groups.append(group)
    order = rank_gallery(scores, exclude=refs)
    # Position of every gallery image in each ranking; the removed reference gets N (after everything).
    n = scores.shape[1]
    position = torch.full((n_queries, n), n, dtype=torch.long, device=order.device)
    position.scatter_(1, order, torch.arange(n - 1, device=order.device).expand(n_queries, -1))
    group_idx = torch.tensor(groups, dtype=torch.long, device=order.device).view(n_queries, len(groups[0]))
    subset_order = group_idx.gather(1, position.gather(1, group_idx).argsort(dim=1))
    return order, subset_order


def index_names(indices: Tensor, gallery_names: list[str]) -> list[list[str]]:
    """Rows of gallery indices (as `cirr_rankings`/`rank_gallery` return) as rows of image names."""
    return [[gallery_names[i] for i in row] for row in indices.tolist()]


def _recall_at(ranked: Tensor, targets: Tensor, ks: tuple[int, ...]) -> dict[int, float]:
    """Percent of queries whose target is among the first k of `ranked`, for each k."""
    # Each target appears exactly once per row (the callers check), so argmax finds its position.
    rank = (ranked == targets.to(ranked.device).unsqueeze(1)).int().argmax(dim=1)
    return {k: (rank < k).sum().item() * 100.0 / len(rank) for k in ks}


def _geometric_mean(values: list[float]) -> float:
    """The limit 0 when a value is 0; `statistics.geometric_mean` (the reference's) raises there."""
    if min(values) == 0:
        return 0.0
    return math.exp(mean(math.log(v) for v in values))


def cirr_metrics(
    scores: Tensor,
    gallery_names: list[str],
    reference_names: list[str],
    target_names: list[str],
    group_members: list[list[str]],
) -> dict[str, float]:
    """CIRR validation metrics in percent, following the reference protocol.

    The reference image is removed from each ranking; R@K asks whether `target_names[q]` is within
    the first K of the remaining N-1 images; Rs@K asks the same within the ranking restricted to
    the query's group (reference removed, 5 left). Keys: `recall_at{1,5,10,50}`,
    `recall_subset_at{1,2,3}`, `mean_r5_rs1` = (R@5 + Rs@1)/2 (the paper's headline selection score),
    and `arithmetic_mean`, `harmonic_mean`, `geometric_mean` of the seven recalls (the arithmetic
    mean is the keep-best criterion, see `KEEP_BEST_KEY`).

    A target missing from the gallery or from its group, or equal to the reference (which is
    removed), raises ValueError naming the query - the reference code only asserts.
    """
    if len(target_names) != len(reference_names):
        raise ValueError(f"{len(target_names)} targets for {len(reference_names)} references")
    order, subset_order = cirr_rankings(scores, gallery_names, reference_names, group_members)
    index = gallery_index(gallery_names)
    targets = _lookup(index, target_names, "target", reference_names)
    for q, (ref, tgt) in enumerate(zip(reference_names, target_names, strict=True)):
        if ref == tgt:
            raise ValueError(f"query {q}: target {tgt!r} is its own reference, which the protocol removes")
        if tgt not in group_members[q]:
            raise ValueError(f"query {q} (reference {ref!r}): target {tgt!r} is not a member of its group")
    recall = _recall_at(order, targets, CIRR_RECALL_KS)
    subset = _recall_at(subset_order, targets, CIRR_SUBSET_KS)
    out = {f"recall_at{k}": v for k, v in recall.items()}
    out.update({f"recall_subset_at{k}": v for k, v in subset.items()})
    seven = list(recall.values()) + list(subset.values())
    out.update(cirr_averages(out))
    out["harmonic_mean"] = harmonic_mean(seven)
    out["geometric_mean"] = _geometric_mean(seven)
    return out


def cirr_averages(recalls: dict[str, float]) -> dict[str, float]:
    """The two linear CIRR averages of a row's seven recalls: `mean_r5_rs1` (the paper's "Avg") and
    `arithmetic_mean` (the authors' keep-best key)."""
    seven = [recalls[f"recall_at{k}"] for k in CIRR_RECALL_KS] + [
        recalls[f"recall_subset_at{k}"] for k in CIRR_SUBSET_KS]
    return {"mean_r5_rs1": (recalls["recall_at5"] + recalls["recall_subset_at1"]) / 2, "arithmetic_mean": mean(seven)}


def fashioniq_metrics(scores: Tensor, gallery_names: list[str], target_names: list[str]) -> dict[str, float]:
    """FashionIQ R@10 and R@50 in percent for one category (`recall_at10`, `recall_at50`).

    Unlike CIRR, the reference image is NOT removed: it stays in the gallery and may take a slot.
    """
    _check_scores(scores, gallery_names, len(target_names))
    index = gallery_index(gallery_names)
    targets = _lookup(index, target_names, "target")
    recall = _recall_at(rank_gallery(scores), targets, FASHIONIQ_RECALL_KS)
    return {f"recall_at{k}": v for k, v in recall.items()}


def fashioniq_summary(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    """Flatten per-category results and add the averages the reference logs and keeps the best by.

    Keys: `<category>_recall_at10`, `<category>_recall_at50` for each category,
    `average_recall_at10`, `average_recall_at50` (means over categories) and
    `average` = (mean R@10 + mean R@50)/2 (the reference calls it `average_recall`).
    """
    if not per_category:
        raise ValueError("no FashionIQ categories to summarise")
    out: dict[str, float] = {}
    for category, metrics in per_category.items():
        for k in FASHIONIQ_RECALL_KS:
            if f"recall_at{k}" not in metrics:
                raise ValueError(f"category {category!r} has no recall_at{k}")
            out[f"{category}_recall_at{k}"] = metrics[f"recall_at{k}"]
    for k in FASHIONIQ_RECALL_KS:
        out[f"average_recall_at{k}"] = mean(m[f"recall_at{k}"] for m in per_category.values())
    out["average"] = (out["average_recall_at10"] + out["average_recall_at50"]) / 2
    return out


def chance_levels(dataset: Literal["CIRR", "FashionIQ"], gallery_size: int) -> dict[str, float]:
    """Expected value of each metric (percent) when the ranking is a uniformly random permutation.

    CIRR: the reference is removed, so the target is uniform over N-1 places: R@K = K/(N-1);
    within the group it is uniform over 5: Rs@K = K/5. FashionIQ: R@K = K/N. The arithmetic mean
    and `mean_r5_rs1` are linear, so their chance levels follow; the harmonic and geometric means
    are not and are left out. For FashionIQ's averages pass these per category to
    `fashioniq_summary` (averages of expectations are expectations of averages).
    """
    if dataset == "CIRR":
        candidates = gallery_size - 1
        if candidates < 1:
            raise ValueError(f"a CIRR gallery needs at least 2 images, got {gallery_size}")
        out = {f"recall_at{k}": min(k, candidates) * 100.0 / candidates for k in CIRR_RECALL_KS}
        out.update({f"recall_subset_at{k}": k * 100.0 / CIRR_SUBSET_SIZE for k in CIRR_SUBSET_KS})
        return out | cirr_averages(out)
    if dataset == "FashionIQ":
        if gallery_size < 1:
            raise ValueError(f"a FashionIQ gallery needs at least 1 image, got {gallery_size}")
        return {f"recall_at{k}": min(k, gallery_size) * 100.0 / gallery_size for k in FASHIONIQ_RECALL_KS}
    raise ValueError(f"dataset must be 'CIRR' or 'FashionIQ', got {dataset!r}")
