"""CIRR in its released layout (`<root>/cirr_dataset/...`), as triplets or as a gallery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sprc_lib.data.base import RetrievalDataset, check_choice
from sprc_lib.data.records import CIRRTriplet, load_cirr_split, load_cirr_triplets
from sprc_lib.data.schema import CIRR_DIR, CIRR_SPLITS, cirr_caption_path, cirr_split_path


class CIRRDataset(RetrievalDataset):
    """CIRR `train`/`val`/`test1` from `root` (the folder that contains `cirr_dataset/`).

    relative items: `pair_id`, `reference_name`, `caption` (raw), `group_members` (6 names), and
    `target_name`, `target_soft` outside test1; with `preprocess`, also `reference` and `target`.
    classic items: `name` (+ `image`). The gallery is the whole split file, in its order.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        mode: str,
        preprocess: Callable | None = None,
        skip_missing: bool = False,
    ) -> None:
        check_choice(split, CIRR_SPLITS, "CIRR split")
        super().__init__(mode, preprocess, skip_missing)
        self.root = Path(root)
        self.split = split
        self.name = f"CIRR {split}"
        self._relpaths = load_cirr_split(cirr_split_path(self.root, split))
        self.image_names = list(self._relpaths)
        self.triplets: list[CIRRTriplet] = load_cirr_triplets(
            cirr_caption_path(self.root, split), split, self._relpaths
        )
        self._apply_missing_policy()

    def image_path(self, name: str) -> Path:
        return self.root / CIRR_DIR / self._relpaths[name]

    def _relative_item(self, index: int) -> dict[str, Any]:
        t = self.triplets[index]
        item: dict[str, Any] = {
            "pair_id": t.pair_id,
            "reference_name": t.reference,
            "caption": t.caption,
            "group_members": list(t.members),
        }
        if t.target is not None:
            item["target_name"] = t.target
            item["target_soft"] = dict(t.target_soft or {})
        if self.preprocess is not None:
            item["reference"] = self._image(t.reference)
            if t.target is not None:
                item["target"] = self._image(t.target)
        return item
