"""FashionIQ in its released layout (`<root>/fashionIQ_dataset/...`), any subset of categories."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sprc_lib.data.base import RetrievalDataset, check_choice
from sprc_lib.data.captions import fashioniq_eval_caption, fashioniq_train_caption
from sprc_lib.data.errors import DataError
from sprc_lib.data.records import FashionIQTriplet, load_fashioniq_split, load_fashioniq_triplets
from sprc_lib.data.schema import (
    FASHIONIQ_CATEGORIES,
    FASHIONIQ_IMAGE_SUFFIXES,
    FASHIONIQ_SPLITS,
    fashioniq_caption_path,
    fashioniq_image_dir,
    fashioniq_split_path,
)


def index_images(image_dir: Path) -> dict[str, str]:
    """ASIN -> file name for every .png/.jpg in `image_dir`: one directory listing instead of a
    stat per image, which matters for ~77k files. `.png` wins when both exist (SPRC opens .png)."""
    if not image_dir.is_dir():
        raise DataError(
            f"FashionIQ image folder not found: {image_dir}. Put the images there as <ASIN>.jpg or "
            f"<ASIN>.png (see data/README.md)."
        )
    index: dict[str, str] = {}
    for entry in os.scandir(image_dir):
        stem, suffix = os.path.splitext(entry.name)
        if suffix in FASHIONIQ_IMAGE_SUFFIXES and (
            stem not in index or suffix == FASHIONIQ_IMAGE_SUFFIXES[0]
        ):
            index[stem] = entry.name
    return index


class FashionIQDataset(RetrievalDataset):
    """FashionIQ `train`/`val`/`test` for `dress_types` from `root` (which contains `fashionIQ_dataset/`).

    relative items: `reference_name`, `captions` (the raw pair), `caption` (the training
    randomisation on train, the deterministic join otherwise), `dress_type`, and `target_name`
    outside test; with `preprocess`, also `reference` and `target`. classic items: `name` (+ `image`).
    The gallery is the categories' split files concatenated in `dress_types` order.

    The training caption is drawn from an RNG seeded by (seed, epoch, index), so it is the same in
    every DataLoader worker and after a resume; call `set_epoch` before each epoch's iterator.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        dress_types: Sequence[str],
        mode: str,
        preprocess: Callable | None = None,
        skip_missing: bool = False,
        seed: int = 0,
    ) -> None:
        check_choice(split, FASHIONIQ_SPLITS, "FashionIQ split")
        if isinstance(dress_types, str) or not dress_types:
            raise ValueError(f"dress_types must be a non-empty list of categories, got {dress_types!r}")
        for category in dress_types:
            check_choice(category, FASHIONIQ_CATEGORIES, "FashionIQ dress type")
        super().__init__(mode, preprocess, skip_missing)
        self.root = Path(root)
        self.split = split
        self.dress_types = list(dress_types)
        self.name = f"FashionIQ {split} {'+'.join(self.dress_types)}"
        self.seed = seed
        self.epoch = 0
        self.triplets: list[FashionIQTriplet] = []
        for category in self.dress_types:
            names = load_fashioniq_split(fashioniq_split_path(self.root, category, split))
            self.image_names += names
            self.triplets += load_fashioniq_triplets(fashioniq_caption_path(self.root, category, split), split,
                                                     category, gallery=None if split == "train" else set(names))
        self._image_dir = fashioniq_image_dir(self.root)
        self._files = index_images(self._image_dir)
        self._apply_missing_policy()

    def set_epoch(self, epoch: int) -> None:
        """Pick the epoch whose training captions `__getitem__` draws."""
        self.epoch = epoch

    def image_path(self, name: str) -> Path:
        return self._image_dir / self._files.get(name, name + FASHIONIQ_IMAGE_SUFFIXES[0])

    def _has_image(self, name: str) -> bool:
        return name in self._files

    def caption(self, index: int) -> str:
        """The query text the model sees for triplet `index` this epoch."""
        c0, c1 = self.triplets[index].captions
        if self.split == "train":
            return fashioniq_train_caption(c0, c1, random.Random(f"{self.seed}:{self.epoch}:{index}"))
        return fashioniq_eval_caption(c0, c1)

    def _relative_item(self, index: int) -> dict[str, Any]:
        t = self.triplets[index]
        item: dict[str, Any] = {
            "reference_name": t.reference,
            "captions": list(t.captions),
            "caption": self.caption(index),
            "dress_type": t.dress_type,
        }
        if t.target is not None:
            item["target_name"] = t.target
        if self.preprocess is not None:
            item["reference"] = self._image(t.reference)
            if t.target is not None:
                item["target"] = self._image(t.target)
        return item
