"""The evaluation protocols of the authors' code: CIRR val, FashionIQ val per category, the CIRR test files.

Each takes an `EvalContext` (the model ready to score) and the data root; the metrics come from
`sprc_lib.evaluation.metrics`, so the trainer, the command line and the notebooks report the same
numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from sprc_lib.data.base import RetrievalDataset
from sprc_lib.data.cirr import CIRRDataset
from sprc_lib.data.errors import DataError
from sprc_lib.data.fashioniq import FashionIQDataset
from sprc_lib.data.schema import FASHIONIQ_CATEGORIES
from sprc_lib.evaluation.context import EvalContext
from sprc_lib.evaluation.index import index_features, query_scores, relative_queries
from sprc_lib.evaluation.metrics import chance_levels, cirr_metrics, fashioniq_metrics, fashioniq_summary
from sprc_lib.evaluation.rerank import Reranker, rerank
from sprc_lib.evaluation.submission import RECALL_TOP, check_output_dir, cirr_submission, write_cirr_submission


def split_scores(ctx: EvalContext, gallery: RetrievalDataset, queries: RetrievalDataset,
                 reranker: Reranker | None = None, exclude_reference: bool = False
                 ) -> tuple[list[Tensor], list[str], list[str]]:
    """Every query of `queries` (relative) scored against `gallery` (classic): ([stage-1 scores] or [stage-1,
    re-ranked scores], gallery names, reference names). `exclude_reference`: the reference image never
    takes a re-ranking slot, since CIRR's metrics remove it."""
    index = index_features(ctx, gallery)
    refs, captions = relative_queries(queries)
    stages = [query_scores(ctx, index, refs, captions)]
    if reranker is not None:
        rows = {name: i for i, name in enumerate(index.names)}
        exclude = torch.tensor([rows[r] for r in refs]) if exclude_reference else None
        stages.append(rerank(reranker, gallery, stages[0], index.names, refs, captions, exclude))
    return stages, index.names, refs


def cirr_validation(ctx: EvalContext, root: str | Path, reranker: Reranker | None = None) -> list[dict[str, float]]:
    """CIRR val metrics (R@K with the reference removed, Recall_subset@K, the means), per stage."""
    queries = ctx.load(CIRRDataset, root, "val", "relative")
    stages, names, refs = split_scores(ctx, ctx.load(CIRRDataset, root, "val", "classic"), queries, reranker,
                                       exclude_reference=True)
    targets, members = [t.target for t in queries.triplets], [list(t.members) for t in queries.triplets]
    return [cirr_metrics(scores, names, refs, targets, members) for scores in stages]


def fashioniq_validation(ctx: EvalContext, root: str | Path, categories: Sequence[str] = FASHIONIQ_CATEGORIES,
                         reranker: Reranker | None = None) -> list[dict[str, float]]:
    """FashionIQ val: R@10/R@50 per category (gallery = that category's val split), and the averages, per stage."""
    per_category: list[dict[str, dict[str, float]]] = []
    for category in categories:
        queries = ctx.load(FashionIQDataset, root, "val", [category], "relative")
        gallery = ctx.load(FashionIQDataset, root, "val", [category], "classic")
        stages, names, _ = split_scores(ctx, gallery, queries, reranker)
        per_category += [{} for _ in range(len(stages) - len(per_category))]
        for result, scores in zip(per_category, stages, strict=True):
            result[category] = fashioniq_metrics(scores, names, [t.target for t in queries.triplets])
    return [fashioniq_summary(result) for result in per_category]


def validation_stages(ctx: EvalContext, dataset: str, root: str | Path, reranker: Reranker | None = None
                      ) -> list[dict[str, float]]:
    """The authors' validation for `dataset` ("CIRR" or "FashionIQ", all three categories): stage 1's
    metrics, and with a `reranker` SPRC²'s after them."""
    if dataset == "CIRR":
        return cirr_validation(ctx, root, reranker)
    return fashioniq_validation(ctx, root, reranker=reranker)


def validate(ctx: EvalContext, dataset: str, root: str | Path, reranker: Reranker | None = None
             ) -> dict[str, float]:
    """The metrics of the final ranking: stage 1's, or SPRC²'s with a `reranker`."""
    return validation_stages(ctx, dataset, root, reranker)[-1]


def validation_galleries(dataset: str, root: str | Path, skip_missing: bool = False
                         ) -> list[CIRRDataset | FashionIQDataset]:
    """The galleries `validate` indexes (names only): CIRR val, or each FashionIQ category's val split."""
    if dataset == "CIRR":
        return [CIRRDataset(root, "val", "classic", skip_missing=skip_missing)]
    return [FashionIQDataset(root, "val", [c], "classic", skip_missing=skip_missing) for c in FASHIONIQ_CATEGORIES]


def chance(dataset: str, root: str | Path, skip_missing: bool = False) -> dict[str, float]:
    """What a random ranking scores on the validation galleries, in the same keys as `validate`."""
    sizes = [len(g.image_names) for g in validation_galleries(dataset, root, skip_missing)]
    if dataset == "CIRR":
        return chance_levels("CIRR", sizes[0])
    return fashioniq_summary({c: chance_levels("FashionIQ", n) for c, n in zip(FASHIONIQ_CATEGORIES, sizes,
                                                                                  strict=True)})


def cirr_test_submission(ctx: EvalContext, root: str | Path, out_dir: str | Path, name: str,
                         reranker: Reranker | None = None) -> tuple[Path, Path]:
    """Rank CIRR test1 (re-ranked with a `reranker`) and write the two rc2 files for the evaluation server,
    validated first."""
    queries = ctx.load(CIRRDataset, root, "test1", "relative")
    if queries.dropped_triplets:
        raise DataError(f"{queries.name}: {queries.dropped_triplets} test queries use missing images "
                        f"(e.g. {queries.missing_images[0]}); the server needs a ranking for every pair id: "
                        "restore the images (`python -m sprc_lib check-data --dataset CIRR` lists them)")
    check_output_dir(out_dir)
    gallery = ctx.load(CIRRDataset, root, "test1", "classic")
    if len(gallery.image_names) <= RECALL_TOP:  # before any image is encoded
        raise DataError(f"{gallery.name}: {len(gallery.image_names)} images; the server's recall file ranks "
                        f"{RECALL_TOP} images besides each query's reference, so the gallery needs at least "
                        f"{RECALL_TOP + 1}: use the full test1 split (split.rc2.test1.json and its images)")
    stages, names, refs = split_scores(ctx, gallery, queries, reranker, exclude_reference=True)
    scores = stages[-1]
    pair_ids = [t.pair_id for t in queries.triplets]
    members = [list(t.members) for t in queries.triplets]
    recall, recall_subset = cirr_submission(scores, names, pair_ids, refs, members)
    return write_cirr_submission(Path(out_dir), name, recall, recall_subset, pair_ids=pair_ids, gallery_names=names,
                                 reference_names=refs, group_members=members)
