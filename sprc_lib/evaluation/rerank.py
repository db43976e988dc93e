"""SPRC²'s second stage at evaluation: each query's top K from stage 1, re-ordered by the re-ranker.

Stage 1 scores every gallery image with one dot product; the re-ranker (`sprc_lib.model.rerank`)
costs a Q-Former pass per (query, candidate), so it sees only the top K. Everything works on score
matrices: the re-ranked scores keep stage 1's values beyond the top K and lift the top K above them
in their new order, so the metrics, the CIRR files and the grids read a re-ranked list exactly as they
read stage 1's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sprc_lib import distributed
from sprc_lib.data.base import RetrievalDataset
from sprc_lib.env import autocast
from sprc_lib.evaluation.context import EvalContext
from sprc_lib.evaluation.index import IndexFeatures, index_features
from sprc_lib.model.tokenizer import tokenize
from sprc_lib.progress import tqdm

# The authors' validation script re-ranks CIRR's top 200 and FashionIQ's top 40. The toy galleries are
# smaller and the tiny re-ranker is weaker: its top K is what stage 1 already ranks well enough for the
# re-ranker to add to (notebook 07 plots the choice).
DEFAULT_TOP_K = {"CIRR": 200, "FashionIQ": 40}
TOY_TOP_K = {"CIRR": 20, "FashionIQ": 40}
TOY_FUSE = 0.5  # the tiny re-ranker adds to SPRC fused with it, not alone (notebook 07, section 5)


def default_top_k(dataset: str, preset: str) -> int:
    """Candidates re-ordered per query unless told: the authors' numbers, or the toy track's for the tiny preset."""
    return (TOY_TOP_K if preset == "tiny" else DEFAULT_TOP_K)[dataset]


def default_fuse(preset: str) -> float:
    """The fusion weight the course uses unless told: the authors' pure re-ranking (0), or the toy track's."""
    return TOY_FUSE if preset == "tiny" else 0.0


@dataclass
class Reranker:
    """A re-ranker ready to score (its own context: model, tokenizer, device, cache) and how to use it.

    `fuse` ALPHA orders the top K by ALPHA * stage 1 + (1 - ALPHA) * stage 2, with stage 1's scores
    rescaled to [0, 1] within each query's top K (min to max) to match the re-ranker's probabilities;
    0 is the authors' pure re-ranking, 1 keeps stage 1's order.
    """

    ctx: EvalContext
    top_k: int
    fuse: float = 0.0


def top_candidates(scores: Tensor, k: int, exclude: Tensor | None = None) -> Tensor:
    """(Q, K) gallery indices of each query's K best stage-1 images, best first (stable among ties), never
    the `exclude`d one (CIRR's reference image, which the metrics remove)."""
    masked = scores.clone()
    if exclude is not None:
        masked[torch.arange(len(scores)), exclude] = float("-inf")
    k = min(k, scores.shape[1] - (exclude is not None))
    return torch.sort(masked, dim=1, descending=True, stable=True).indices[:, :k]


def fused(stage1: Tensor, stage2: Tensor, alpha: float) -> Tensor:
    """(Q, K) order keys of the candidates: `alpha` * stage 1 rescaled to [0, 1] per query + (1 - alpha) * stage 2."""
    if alpha == 0.0:
        return stage2
    low, high = stage1.amin(1, keepdim=True), stage1.amax(1, keepdim=True)
    scaled = (stage1 - low) / (high - low).clamp_min(1e-12)
    return alpha * scaled + (1 - alpha) * stage2


def reranked_scores(scores: Tensor, candidates: Tensor, stage2: Tensor, alpha: float = 0.0) -> Tensor:
    """Stage 1's (Q, N) scores with each query's `candidates` (Q, K) lifted above every other image and
    ordered by `fused` keys; every other image keeps its stage-1 score, so its rank beyond K is unchanged."""
    keys = fused(scores.gather(1, candidates), stage2.to(scores.dtype), alpha)  # in [0, 1]
    lifted = scores.amax(1, keepdim=True) + 1.0 + keys
    return scores.clone().scatter_(1, candidates, lifted)


@torch.no_grad()
def candidate_scores(reranker: Reranker, index: IndexFeatures, reference_names: Sequence[str],
                     captions: Sequence[str], candidates: Tensor) -> Tensor:
    """(Q, K) re-ranker scores of each query's candidates, read from the re-ranker's own gallery `index`
    (its `ln_vision` tokens, from the feature cache when there is one), in batches of pairs.

    With several processes each scores its share of the queries; all get every row.
    """
    ctx = reranker.ctx
    model, device, dtype, batch = ctx.scorer(), ctx.device, ctx.dtype, ctx.batch_size
    model.eval()
    share = distributed.shard(len(captions), 1)
    k = candidates.shape[1]
    ids, mask = tokenize(ctx.tokenizer, list(captions[share.start: share.stop]), model.config.max_txt_len)
    refs = index.embeds_of(list(reference_names[share.start: share.stop]))
    pairs = torch.arange(len(share) * k)
    out = []
    for chunk in tqdm(pairs.split(batch), desc=f"re-rank top {k}", leave=False, disable=not distributed.is_main()):
        query, slot = chunk // k, chunk % k
        with autocast(device, dtype):
            s = model.match_scores(refs[query], index.embeds[candidates[share.start + query, slot].to(device)],
                                   ids[query].to(device), mask[query].to(device))
        out.append(s.to(ctx.real_dtype))
    local = torch.cat(out).view(len(share), k) if out else torch.empty(0, k, dtype=ctx.real_dtype, device=device)
    return distributed.all_gather_rows(local).cpu()


def rerank(reranker: Reranker, gallery: RetrievalDataset, scores: Tensor, gallery_names: list[str],
           reference_names: Sequence[str], captions: Sequence[str], exclude: Tensor | None = None) -> Tensor:
    """Stage 1's `scores` (Q, N) over `gallery` re-ranked: the top `reranker.top_k` of each query re-ordered."""
    index = index_features(reranker.ctx, gallery)
    if index.names != gallery_names:
        raise ValueError(f"{gallery.name}: the re-ranker's gallery order differs from stage 1's")
    candidates = top_candidates(scores, reranker.top_k, exclude)
    stage2 = candidate_scores(reranker, index, reference_names, captions, candidates)
    return reranked_scores(scores, candidates, stage2, reranker.fuse)
