"""Random triplets shaped for a model: what the model tests and the benchmark feed it, no dataset needed."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sprc_lib.model.config import SPRCConfig

CLS_ID = 2  # any id above the specials works; [CLS] leads every caption, as the tokenizer writes it


def random_triplets(
    config: SPRCConfig, count: int, seed: int, length: int | None = None, lengths: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """`count` (reference, target, caption) triplets of random pixels and ids, the same for the same seed.

    Captions are `length` tokens (default `max_txt_len`), [CLS] first, padded after `lengths` tokens each
    (drawn between 3 and `length` when not given). Keys match `SPRCModel.forward`.
    """
    g = torch.Generator().manual_seed(seed)
    length = length or config.max_txt_len
    ids = torch.randint(5, config.qformer_config.vocab_size, (count, length), generator=g)
    kept = torch.randint(3, length + 1, (count, 1), generator=g) if lengths is None else torch.tensor(lengths)[:, None]
    mask = (torch.arange(length)[None] < kept).long()
    ids[:, 0] = CLS_ID
    ids[mask == 0] = 0
    size = config.vision_config.image_size
    return {
        "reference": torch.randn(count, 3, size, size, generator=g),
        "target": torch.randn(count, 3, size, size, generator=g),
        "input_ids": ids,
        "attention_mask": mask,
    }
