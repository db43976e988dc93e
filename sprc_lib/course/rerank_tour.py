"""Notebook 07's measurements: both stages on one split, the ceiling re-ranking cannot pass, and its price.

Stage 2 scores each query's top `k_max` once; re-ranking a shorter top K re-uses the first K of them,
because stage 1's top K is a prefix of its top `k_max`. So one pass of the re-ranker gives the whole
curve over K, and the time per query is measured separately, on a few queries at each K.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from sprc_lib.course.explorer import Query, Retrieval, Retriever
from sprc_lib.course.style import CourseFigure, plain_log_ticks
from sprc_lib.data.cirr import CIRRDataset
from sprc_lib.evaluation.context import EvalContext
from sprc_lib.evaluation.index import IndexFeatures, index_features
from sprc_lib.evaluation.metrics import cirr_metrics
from sprc_lib.evaluation.rerank import Reranker, candidate_scores, fused, reranked_scores, top_candidates


@dataclass
class TwoStages:
    """CIRR val queries ranked by stage 1, and their top `k_max` scored by the re-ranker."""

    retriever: Retriever  # the stage-1 gallery and ranking, for grids
    queries: list[Query]  # the queries scored (CIRR val, or its first `limit`)
    reranker: Reranker
    index: IndexFeatures  # the re-ranker's gallery tokens
    stage1: Tensor  # (Q, N) stage-1 scores
    candidates: Tensor  # (Q, k_max) stage 1's best images, reference excluded, best first
    stage2: Tensor  # (Q, k_max) the re-ranker's probability of "match" for each candidate

    @property
    def references(self) -> list[str]:
        return [q.reference for q in self.queries]

    @property
    def captions(self) -> list[str]:
        return [q.text for q in self.queries]

    def reranked(self, k: int, alpha: float = 0.0) -> Tensor:
        """(Q, N) scores with each query's top `k` re-ordered (fused with weight `alpha` on stage 1)."""
        if not 1 <= k <= self.candidates.shape[1]:
            raise ValueError(f"k {k}: re-rank between 1 and the {self.candidates.shape[1]} candidates scored")
        return reranked_scores(self.stage1, self.candidates[:, :k], self.stage2[:, :k], alpha)

    def before_after(self, i: int, k: int, alpha: float = 0.0, shown: int = 5) -> list[Retrieval]:
        """Query i's top `shown` by stage 1, then re-ranked; the re-ranked tiles show their order keys (the
        fused score in [0, 1], or P(match) at ALPHA 0) where a re-ranked score would show a lifted value."""
        query = self.queries[i]
        before = self.retriever.rank(query, self.stage1[i], shown)
        after = self.retriever.rank(query, self.reranked(k, alpha)[i], shown)
        keys = dict(zip(self.candidates[i, :k].tolist(), fused(self.stage1[i: i + 1].gather(
            1, self.candidates[i: i + 1, :k]), self.stage2[i: i + 1, :k], alpha)[0].tolist(), strict=True))
        column = {name: c for c, name in enumerate(self.retriever.gallery_names)}
        shown_keys = [keys.get(column[name], score) for name, score in zip(after.names, after.scores, strict=True)]
        return [before, dataclasses.replace(after, scores=shown_keys)]

    def metrics(self, scores: Tensor) -> dict[str, float]:
        """CIRR's validation metrics of a ranking of these queries."""
        return cirr_metrics(scores, self.retriever.gallery_names, self.references, [q.target for q in self.queries],
                            [list(q.members) for q in self.queries])

    def target_ranks(self, scores: Tensor) -> Tensor:
        """(Q,) the rank of each query's target (1 = first), its reference removed."""
        return torch.tensor([self.retriever.rank(q, row, 1).target_rank for q, row in
                             zip(self.queries, scores, strict=True)])


def two_stages(stage1: EvalContext, reranker: Reranker, root: str | Path, k_max: int,
               limit: int | None = None) -> TwoStages:
    """Score CIRR val (its first `limit` queries) with both stages: stage 1 against the whole gallery, the
    re-ranker on each query's top `k_max`."""
    retriever = Retriever.for_split(stage1, "CIRR", root)
    queries = retriever.queries[:limit]
    references, captions = [q.reference for q in queries], [q.text for q in queries]
    scores = retriever.score(references, captions)
    column = {name: i for i, name in enumerate(retriever.gallery_names)}
    candidates = top_candidates(scores, k_max, torch.tensor([column[r] for r in references]))
    index = index_features(reranker.ctx, reranker.ctx.load(CIRRDataset, root, "val", "classic"))
    stage2 = candidate_scores(reranker, index, references, captions, candidates)
    return TwoStages(retriever, queries, reranker, index, scores, candidates, stage2)


def recall_curve(ranks: Tensor, ks: Sequence[int]) -> list[float]:
    """Recall@K in percent for each K: the fraction of targets ranked K or better."""
    return [float((ranks <= k).float().mean()) * 100 for k in ks]


def seconds_per_query(two: TwoStages, ks: Sequence[int], queries: int = 20) -> tuple[float, dict[int, float]]:
    """(stage 1's seconds per query, the re-ranker's seconds per query at each K), timed on the first
    `queries` queries: stage 1 composes each query and scores the whole indexed gallery; stage 2 runs one
    cross-encoder pass per candidate."""
    retriever, n = two.retriever, min(queries, len(two.queries))
    start = time.perf_counter()
    retriever.score(two.references[:n], two.captions[:n])
    stage1 = (time.perf_counter() - start) / n
    stage2 = {}
    for k in ks:
        start = time.perf_counter()
        candidate_scores(two.reranker, two.index, two.references[:n], two.captions[:n], two.candidates[:n, :k])
        stage2[k] = (time.perf_counter() - start) / n
    return stage1, stage2


def ceiling_figure(ks: Sequence[int], ceiling: Sequence[float], reranked: Sequence[float], baseline: float) -> Figure:
    """Stage 1's R@K (the most re-ranking its top K can put first) beside the R@1 re-ranking reached."""
    fig = CourseFigure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(ks, ceiling, "o-", label="ceiling: stage 1's R@K (target in the top K)")
    ax.plot(ks, reranked, "s-", label="R@1 after re-ranking the top K")
    ax.axhline(baseline, color="#999999", linestyle="--", label="stage 1's R@1")
    ax.set(xscale="log", xlabel="K (candidates re-ranked per query)", ylabel="%", ylim=(0, 105))
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


def cost_figure(ks: Sequence[int], seconds: Sequence[float], stage1_seconds: float, gains: Sequence[float]) -> Figure:
    """The price of re-ranking (time per query, beside stage 1's) and what it buys (R@1 change), over K."""
    fig = CourseFigure(figsize=(9, 3.2), layout="constrained")
    cost, gain = fig.subplots(1, 2)
    cost.plot(ks, [s * 1000 for s in seconds], "o-", label="re-ranking the top K")
    cost.axhline(stage1_seconds * 1000, color="#999999", linestyle="--", label="stage 1 (whole gallery)")
    cost.set(xscale="log", yscale="log", xlabel="K", ylabel="ms per query", title="cost")
    cost.set_xticks(list(ks), [str(k) for k in ks])
    plain_log_ticks(cost.yaxis)
    cost.legend(fontsize=8)
    gain.bar([str(k) for k in ks], gains, color=["C2" if g > 0 else "C3" for g in gains])
    gain.axhline(0, color="#555555", linewidth=0.8)
    gain.set(xlabel="K", ylabel="R@1 change (points)", title="benefit")
    return fig
