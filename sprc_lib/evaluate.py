"""Validation as the reference runs it: index the gallery once, then score every query against it.

Index features keep both what the reference keeps: the projected query-token features of each
gallery image (the targets' side) and its `ln_vision` outputs, because a query's reference image is
looked up in the gallery rather than encoded again.

In a multi-process run (a process group is up, as in training under torchrun) every process calls
these functions together: each encodes a contiguous share of the gallery and of the queries, in the
very batches one process would run, and the shares are gathered, so every process holds the whole
score matrix and computes the same metrics as a single process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from sprc_lib import distributed
from sprc_lib.data import CIRRDataset, FashionIQDataset, collate
from sprc_lib.data.base import RetrievalDataset
from sprc_lib.env import autocast
from sprc_lib.features import CachedImages, FeatureCache
from sprc_lib.metrics import chance_levels, cirr_metrics, fashioniq_metrics, fashioniq_summary
from sprc_lib.model import SPRCModel
from sprc_lib.model.tokenizer import tokenize
from sprc_lib.submission import cirr_submission, write_cirr_submission


@dataclass
class IndexFeatures:
    """A gallery ready for retrieval: names, features (N, Q, D) and `ln_vision` outputs (N, T, Dv)."""

    names: list[str]
    features: Tensor
    embeds: Tensor

    def __post_init__(self) -> None:
        self._row = {name: i for i, name in enumerate(self.names)}

    def embeds_of(self, names: Sequence[str]) -> Tensor:
        """`ln_vision` outputs of gallery images by name (a query's reference image)."""
        missing = [n for n in names if n not in self._row]
        if missing:
            raise ValueError(f"reference image(s) {missing[:5]} are not in the gallery; queries need them indexed")
        return self.embeds[[self._row[n] for n in names]]


def gallery_dataset(dataset: RetrievalDataset, cache: FeatureCache | None, device: torch.device):
    """Items with images: the dataset itself (pixels), or wrapped to read frozen-ViT tokens from the cache."""
    return dataset if cache is None else CachedImages(dataset, cache, device)


@torch.no_grad()
def index_features(
    model: SPRCModel,
    gallery: RetrievalDataset | CachedImages,
    device: torch.device,
    dtype: torch.dtype | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
) -> IndexFeatures:
    """Encode every gallery image (a `classic` dataset, with pixels or cached tokens) once.

    With several processes each encodes its share (whole batches) and every process gets the whole index.
    """
    share = distributed.shard(len(gallery), batch_size)
    loader = DataLoader(
        Subset(gallery, share), batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
        generator=torch.Generator(),
    )
    names, features, embeds = [], [], []
    model.eval()
    for batch in tqdm(loader, desc=f"index {gallery.name}", leave=False, disable=not distributed.is_main()):
        with autocast(device, dtype):
            e = model.encode_image(batch["image"].to(device))
            g = model.image_features(e)
        names += batch["name"]
        features.append(g.float())
        embeds.append(e.to(dtype or torch.float32))
    if not names:  # a share can be empty when the gallery has fewer batches than there are processes
        tokens, width = model.vision_model.embeddings.position_embedding.shape[1:]
        features.append(torch.empty(0, model.config.num_query_tokens, model.config.image_text_hidden_size,
                                    device=device))
        embeds.append(torch.empty(0, tokens, width, dtype=dtype or torch.float32, device=device))
    return IndexFeatures(
        [name for part in distributed.all_gather_objects(names) for name in part],
        distributed.all_gather_rows(torch.cat(features)),
        distributed.all_gather_rows(torch.cat(embeds)),
    )


@torch.no_grad()
def query_scores(
    model: SPRCModel,
    tokenizer,
    index: IndexFeatures,
    reference_names: Sequence[str],
    captions: Sequence[str],
    device: torch.device,
    dtype: torch.dtype | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Scores (len(captions), N) of composed queries against the gallery; higher is better.

    With several processes each scores its share of the queries (whole batches); all get every row.
    """
    model.eval()
    out = [torch.empty(0, len(index.names), device=device)]
    share = distributed.shard(len(captions), batch_size)
    for start in range(share.start, share.stop, batch_size):
        refs = list(reference_names[start : start + batch_size])
        ids, mask = tokenize(tokenizer, list(captions[start : start + batch_size]), model.config.max_txt_len)
        with autocast(device, dtype):
            f = model.composed_features(index.embeds_of(refs), ids.to(device), mask.to(device))
            out.append(model.scores(f, index.features).float())
    return distributed.all_gather_rows(torch.cat(out)).cpu()


def relative_queries(dataset: RetrievalDataset) -> tuple[list[str], list[str]]:
    """(reference names, query captions) of a relative dataset built without `preprocess`, in triplet order."""
    items = [dataset[i] for i in range(len(dataset))]
    return [it["reference_name"] for it in items], [it["caption"] for it in items]


FIQ_CATEGORIES = ("dress", "shirt", "toptee")


def split_scores(
    gallery: RetrievalDataset,
    queries: RetrievalDataset,
    model: SPRCModel,
    tokenizer,
    device: torch.device,
    dtype: torch.dtype | None,
    cache: FeatureCache | None,
    batch_size: int,
    num_workers: int,
) -> tuple[Tensor, list[str], list[str]]:
    """Every query of `queries` (relative) scored against `gallery` (classic): (scores, gallery names, references)."""
    index = index_features(model, gallery_dataset(gallery, cache, device), device, dtype, batch_size, num_workers)
    refs, captions = relative_queries(queries)
    return query_scores(model, tokenizer, index, refs, captions, device, dtype), index.names, refs


def cirr_validation(
    model: SPRCModel,
    tokenizer,
    root: str | Path,
    preprocess,
    device: torch.device,
    dtype: torch.dtype | None = None,
    cache: FeatureCache | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
) -> dict[str, float]:
    """CIRR val metrics (R@K with the reference removed, Recall_subset@K, the means)."""
    gallery = CIRRDataset(root, "val", "classic", preprocess=None if cache else preprocess)
    queries = CIRRDataset(root, "val", "relative")
    scores, names, refs = split_scores(
        gallery, queries, model, tokenizer, device, dtype, cache, batch_size, num_workers
    )
    return cirr_metrics(
        scores, names, refs, [t.target for t in queries.triplets], [list(t.members) for t in queries.triplets]
    )


def fashioniq_validation(
    model: SPRCModel,
    tokenizer,
    root: str | Path,
    preprocess,
    device: torch.device,
    dtype: torch.dtype | None = None,
    cache: FeatureCache | None = None,
    categories: Sequence[str] = FIQ_CATEGORIES,
    batch_size: int = 32,
    num_workers: int = 0,
) -> dict[str, float]:
    """FashionIQ val: R@10/R@50 per category (gallery = that category's val split), and the averages."""
    per_category = {}
    for category in categories:
        gallery = FashionIQDataset(root, "val", [category], "classic", preprocess=None if cache else preprocess)
        queries = FashionIQDataset(root, "val", [category], "relative")
        scores, names, _ = split_scores(
            gallery, queries, model, tokenizer, device, dtype, cache, batch_size, num_workers
        )
        per_category[category] = fashioniq_metrics(scores, names, [t.target for t in queries.triplets])
    return fashioniq_summary(per_category)


def validate(
    dataset: str,
    model: SPRCModel,
    tokenizer,
    root: str | Path,
    preprocess,
    device: torch.device,
    dtype: torch.dtype | None = None,
    cache: FeatureCache | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
) -> dict[str, float]:
    """The reference's validation for `dataset` ("CIRR" or "FashionIQ", all three categories)."""
    if dataset == "CIRR":
        return cirr_validation(model, tokenizer, root, preprocess, device, dtype, cache, batch_size, num_workers)
    return fashioniq_validation(
        model, tokenizer, root, preprocess, device, dtype, cache, FIQ_CATEGORIES, batch_size, num_workers
    )


def validation_galleries(dataset: str, root: str | Path) -> list[CIRRDataset | FashionIQDataset]:
    """The galleries `validate` indexes (names only): CIRR val, or each FashionIQ category's val split."""
    if dataset == "CIRR":
        return [CIRRDataset(root, "val", "classic")]
    return [FashionIQDataset(root, "val", [c], "classic") for c in FIQ_CATEGORIES]


def chance(dataset: str, root: str | Path) -> dict[str, float]:
    """What a random ranking scores on the validation galleries, in the same keys as `validate`."""
    if dataset == "CIRR":
        return chance_levels("cirr", len(CIRRDataset(root, "val", "classic").image_names))
    per_category = {
        c: chance_levels("fashioniq", len(FashionIQDataset(root, "val", [c], "classic").image_names))
        for c in FIQ_CATEGORIES
    }
    return fashioniq_summary(per_category)


def cirr_test_submission(
    model: SPRCModel,
    tokenizer,
    root: str | Path,
    preprocess,
    out_dir: str | Path,
    name: str,
    device: torch.device,
    dtype: torch.dtype | None = None,
    cache: FeatureCache | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
) -> tuple[Path, Path]:
    """Rank CIRR test1 and write the two rc2 files for the evaluation server, validated first."""
    gallery = CIRRDataset(root, "test1", "classic", preprocess=None if cache else preprocess)
    queries = CIRRDataset(root, "test1", "relative")
    scores, names, refs = split_scores(
        gallery, queries, model, tokenizer, device, dtype, cache, batch_size, num_workers
    )
    pair_ids = [t.pair_id for t in queries.triplets]
    members = [list(t.members) for t in queries.triplets]
    recall, recall_subset = cirr_submission(scores, names, pair_ids, refs, members)
    return write_cirr_submission(
        Path(out_dir),
        name,
        recall,
        recall_subset,
        pair_ids=pair_ids,
        gallery_names=names,
        reference_names=refs,
        group_members=members,
    )
