"""A gallery indexed once, and composed queries scored against it, as the authors' validation does.

Index features keep both what the authors' code keeps: the projected query-token features of each
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

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from sprc_lib import distributed
from sprc_lib.data.base import RetrievalDataset, collate
from sprc_lib.data.workers import ignore_stop_signals
from sprc_lib.env import autocast
from sprc_lib.evaluation.context import EvalContext
from sprc_lib.model.tokenizer import tokenize
from sprc_lib.progress import tqdm


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


@torch.no_grad()
def index_features(ctx: EvalContext, gallery: RetrievalDataset) -> IndexFeatures:
    """Encode every image of a `classic` dataset (built without `preprocess`) once.

    With several processes each encodes its share (whole batches) and every process gets the whole index.
    """
    model, device, dtype, batch_size, real = ctx.scorer(), ctx.device, ctx.dtype, ctx.batch_size, ctx.real_dtype
    items = ctx.images(gallery)
    share = distributed.shard(len(items), batch_size)
    loader = DataLoader(
        Subset(items, share), batch_size=batch_size, num_workers=ctx.num_workers, collate_fn=collate,
        generator=torch.Generator(), worker_init_fn=ignore_stop_signals,  # a stop is the main process's to handle
    )
    names, features, embeds = [], [], []
    model.eval()
    # Counted in images: at the real size on a CPU one batch takes minutes. Closed on any way out, so that an
    # error's message starts a line of its own.
    with tqdm(total=len(share), desc=f"index {gallery.name}", unit="img", leave=False,
              disable=not distributed.is_main()) as bar:
        for batch in loader:
            with autocast(device, dtype):
                images = batch["image"].to(device)
                e = model.encode_image(images.to(real) if ctx.exact else images)
                g = model.image_features(e)
            names += batch["name"]
            features.append(g.to(real))
            embeds.append(e.to(dtype or real))
            bar.update(len(batch["name"]))
    if not names:  # a share can be empty when the gallery has fewer batches than there are processes
        tokens, width = model.vision_model.embeddings.position_embedding.shape[1:]
        features.append(torch.empty(0, model.config.num_query_tokens, model.config.image_text_hidden_size,
                                    dtype=real, device=device))
        embeds.append(torch.empty(0, tokens, width, dtype=dtype or real, device=device))
    return IndexFeatures(
        [name for part in distributed.all_gather_objects(names) for name in part],
        distributed.all_gather_rows(torch.cat(features)),
        distributed.all_gather_rows(torch.cat(embeds)),
    )


@torch.no_grad()
def query_scores(ctx: EvalContext, index: IndexFeatures, reference_names: Sequence[str],
                 captions: Sequence[str]) -> Tensor:
    """Scores (len(captions), N) of composed queries against the gallery; higher is better.

    With several processes each scores its share of the queries (whole batches); all get every row.
    """
    model, tokenizer, device, dtype, batch_size = ctx.scorer(), ctx.tokenizer, ctx.device, ctx.dtype, ctx.batch_size
    model.eval()
    out = [torch.empty(0, len(index.names), dtype=ctx.real_dtype, device=device)]
    share = distributed.shard(len(captions), batch_size)
    for start in range(share.start, share.stop, batch_size):
        refs = list(reference_names[start : start + batch_size])
        ids, mask = tokenize(tokenizer, list(captions[start : start + batch_size]), model.config.max_txt_len)
        with autocast(device, dtype):
            f = model.composed_features(index.embeds_of(refs), ids.to(device), mask.to(device))
            out.append(model.scores(f, index.features).to(ctx.real_dtype))
    return distributed.all_gather_rows(torch.cat(out)).cpu()


def relative_queries(dataset: RetrievalDataset) -> tuple[list[str], list[str]]:
    """(reference names, query captions) of a relative dataset built without `preprocess`, in triplet order."""
    items = [dataset[i] for i in range(len(dataset))]
    return [it["reference_name"] for it in items], [it["caption"] for it in items]
