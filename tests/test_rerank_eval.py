"""SPRC² at evaluation: what re-ranking may change in a ranking, the fusion, and the two stages on toy CIRR."""

from __future__ import annotations

import torch

from sprc_lib.evaluation.metrics import rank_gallery
from sprc_lib.evaluation.rerank import fused, reranked_scores, top_candidates


def _case(seed: int = 0, queries: int = 6, gallery: int = 30, k: int = 8):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(queries, gallery, generator=g)
    exclude = torch.randint(0, gallery, (queries,), generator=g)
    candidates = top_candidates(scores, k, exclude)
    stage2 = torch.rand(queries, candidates.shape[1], generator=g)
    return scores, exclude, candidates, stage2


def test_top_candidates_are_stage_ones_best_without_the_reference():
    scores, exclude, candidates, _ = _case()
    order = rank_gallery(scores, exclude)
    assert torch.equal(candidates, order[:, :8])
    assert not (candidates == exclude.unsqueeze(1)).any()


def test_reranking_permutes_the_top_k_and_leaves_every_later_rank_alone():
    scores, exclude, candidates, stage2 = _case()
    before, after = rank_gallery(scores, exclude), rank_gallery(reranked_scores(scores, candidates, stage2), exclude)
    k = candidates.shape[1]
    assert torch.equal(after[:, k:], before[:, k:])
    assert torch.equal(after[:, :k].sort(1).values, before[:, :k].sort(1).values)
    # Pure re-ranking (fuse 0): the top K in the re-ranker's order, best first.
    expected = candidates.gather(1, stage2.argsort(dim=1, descending=True, stable=True))
    assert torch.equal(after[:, :k], expected)
    assert not torch.equal(after[:, :k], before[:, :k])  # the case does re-order something


def test_fuse_zero_is_pure_reranking_and_one_keeps_stage_one():
    scores, exclude, candidates, stage2 = _case(seed=1)
    pure = rank_gallery(reranked_scores(scores, candidates, stage2), exclude)
    assert torch.equal(rank_gallery(reranked_scores(scores, candidates, stage2, 0.0), exclude), pure)
    assert torch.equal(rank_gallery(reranked_scores(scores, candidates, stage2, 1.0), exclude),
                       rank_gallery(scores, exclude))
    keys = fused(scores.gather(1, candidates), stage2, 0.5)
    assert keys.min() >= 0 and keys.max() <= 1  # stage 1 rescaled to the re-ranker's [0, 1]
    half = rank_gallery(reranked_scores(scores, candidates, stage2, 0.5), exclude)
    assert not torch.equal(half, pure)
