"""The evaluation protocols of the authors' code: CIRR val, FashionIQ val per category, the CIRR test files.

Each takes an `EvalContext` (the model ready to score) and the data root; the metrics come from
`sprc_lib.evaluation.metrics`, so the trainer, the command line and the notebooks report the same
numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from sprc_lib.data.base import RetrievalDataset
from sprc_lib.data.cirr import CIRRDataset
from sprc_lib.data.errors import DataError
from sprc_lib.data.fashioniq import FashionIQDataset
from sprc_lib.data.schema import FASHIONIQ_CATEGORIES
from sprc_lib.evaluation.context import EvalContext
from sprc_lib.evaluation.index import index_features, query_scores, relative_queries
from sprc_lib.evaluation.metrics import chance_levels, cirr_metrics, fashioniq_metrics, fashioniq_summary
from sprc_lib.evaluation.submission import check_output_dir, cirr_submission, write_cirr_submission


def split_scores(ctx: EvalContext, gallery: RetrievalDataset, queries: RetrievalDataset
                 ) -> tuple[Tensor, list[str], list[str]]:
    """Every query of `queries` (relative) scored against `gallery` (classic): (scores, gallery names, references)."""
    index = index_features(ctx, gallery)
    refs, captions = relative_queries(queries)
    return query_scores(ctx, index, refs, captions), index.names, refs


def cirr_validation(ctx: EvalContext, root: str | Path) -> dict[str, float]:
    """CIRR val metrics (R@K with the reference removed, Recall_subset@K, the means)."""
    queries = ctx.load(CIRRDataset, root, "val", "relative")
    scores, names, refs = split_scores(ctx, ctx.load(CIRRDataset, root, "val", "classic"), queries)
    return cirr_metrics(
        scores, names, refs, [t.target for t in queries.triplets], [list(t.members) for t in queries.triplets]
    )


def fashioniq_validation(ctx: EvalContext, root: str | Path,
                         categories: Sequence[str] = FASHIONIQ_CATEGORIES) -> dict[str, float]:
    """FashionIQ val: R@10/R@50 per category (gallery = that category's val split), and the averages."""
    per_category = {}
    for category in categories:
        queries = ctx.load(FashionIQDataset, root, "val", [category], "relative")
        scores, names, _ = split_scores(ctx, ctx.load(FashionIQDataset, root, "val", [category], "classic"), queries)
        per_category[category] = fashioniq_metrics(scores, names, [t.target for t in queries.triplets])
    return fashioniq_summary(per_category)


def validate(ctx: EvalContext, dataset: str, root: str | Path) -> dict[str, float]:
    """The authors' validation for `dataset` ("CIRR" or "FashionIQ", all three categories)."""
    if dataset == "CIRR":
        return cirr_validation(ctx, root)
    return fashioniq_validation(ctx, root)


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


def cirr_test_submission(ctx: EvalContext, root: str | Path, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Rank CIRR test1 and write the two rc2 files for the evaluation server, validated first."""
    queries = ctx.load(CIRRDataset, root, "test1", "relative")
    if queries.dropped_triplets:
        raise DataError(f"{queries.name}: {queries.dropped_triplets} test queries use missing images "
                        f"(e.g. {queries.missing_images[0]}); the server needs a ranking for every pair id: "
                        "restore the images (`python -m sprc_lib check-data --dataset CIRR` lists them)")
    check_output_dir(out_dir)
    scores, names, refs = split_scores(ctx, ctx.load(CIRRDataset, root, "test1", "classic"), queries)
    pair_ids = [t.pair_id for t in queries.triplets]
    members = [list(t.members) for t in queries.triplets]
    recall, recall_subset = cirr_submission(scores, names, pair_ids, refs, members)
    return write_cirr_submission(Path(out_dir), name, recall, recall_subset, pair_ids=pair_ids, gallery_names=names,
                                 reference_names=refs, group_members=members)
