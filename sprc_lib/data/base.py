"""What CIRR and FashionIQ share: modes, the missing-image policy, image loading and batching."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate

from sprc_lib.data.errors import DataError
from sprc_lib.data.workers import CarriedError, CarriesErrors

MODES = ("relative", "classic")
# Item fields holding one Python structure per item; `collate` keeps them per item.
PER_ITEM_FIELDS = ("captions", "group_members", "target_soft")


def check_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}; got {value!r}")


def collate(batch: list[dict[str, Any]]) -> dict[str, Any] | CarriedError:
    """Batch dataset items: torch's default_collate, except per-item lists/dicts stay per item.

    default_collate would transpose `group_members` into 6 tuples of B names and fail on
    `target_soft` dicts whose keys differ; here they stay lists of B entries, like the strings.
    A worker's error (`sprc_lib.data.workers`) goes on in the batch's place.
    """
    if isinstance(batch[0], CarriedError):
        return batch[0]
    kept = {key: [item[key] for item in batch] for key in PER_ITEM_FIELDS if key in batch[0]}
    rest = default_collate([{k: v for k, v in item.items() if k not in kept} for item in batch])
    return {**rest, **kept}


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of an image in any mode PIL opens.

    8-bit modes (L, P, RGBA, CMYK, YCbCr, ...) convert as the authors' code converts them
    (`convert("RGB")`; alpha is dropped). Modes of more than 8 bits are scaled first, because PIL's
    `convert` clips them: a 16-bit grayscale PNG (I;16, or I) would load as a white image.
    """
    if image.mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N (0..65535), I (32-bit, 16-bit PNGs open so too)
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) <= 65535 else values.max()
        image = Image.fromarray(np.clip(np.round(values / top * 255), 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":  # floats: 0..1 if they fit, else 0..255
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        image = Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def load_rgb(path: Path) -> Image.Image:
    """Open and decode one image as 8-bit RGB (`to_rgb`); an unreadable file becomes a DataError naming it."""
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(
            f"cannot read image {path} ({err}). Replace or delete the file (with `skip_missing` a "
            f"deleted image is dropped); `python -m sprc_lib check-data --verify-images` finds them all."
        ) from err


class RetrievalDataset(CarriesErrors, Dataset):
    """Base of CIRRDataset and FashionIQDataset; subclasses fill triplets, gallery and paths.

    `relative` mode yields one item per triplet, `classic` one per gallery image. With no
    `preprocess`, items carry names only, so a feature cache can serve the images.
    """

    name: str  # e.g. "CIRR val", for messages

    def set_epoch(self, epoch: int) -> None:
        """Datasets whose items change from epoch to epoch (FashionIQ's caption order) take the epoch here."""

    def __init__(self, mode: str, preprocess: Callable | None, skip_missing: bool) -> None:
        check_choice(mode, MODES, "mode")
        self.mode = mode
        self.preprocess = preprocess
        self.skip_missing = skip_missing
        self.triplets: list = []
        self.image_names: list[str] = []
        self.missing_images: list[str] = []
        self.dropped_triplets = 0
        self.listed_triplets = self.listed_images = 0  # as the annotation files list them

    # Subclasses define where an image lives and which images a triplet needs.
    def image_path(self, name: str) -> Path:
        raise NotImplementedError

    def _has_image(self, name: str) -> bool:
        return self.image_path(name).is_file()

    def triplet_images(self, triplet: Any) -> Iterable[str]:
        """The images a triplet opens (its members are names only, for Recall_subset)."""
        return (triplet.reference,) if triplet.target is None else (triplet.reference, triplet.target)

    def _relative_item(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def _apply_missing_policy(self) -> None:
        """Find missing images up front (an existence check, no decoding); raise or drop them."""
        self.listed_triplets, self.listed_images = len(self.triplets), len(self.image_names)
        needed = dict.fromkeys(self.image_names)
        for triplet in self.triplets:
            needed.update(dict.fromkeys(self.triplet_images(triplet)))
        missing = [name for name in needed if not self._has_image(name)]
        if not missing:
            return
        gone = set(missing)
        affected = sum(1 for t in self.triplets if gone.intersection(self.triplet_images(t)))
        examples = ", ".join(str(self.image_path(n)) for n in missing[:3])
        summary = (
            f"{self.name}: {len(missing)} of {len(needed)} images are missing (e.g. {examples}); "
            f"{affected} of {len(self.triplets)} triplets use them"
        )
        if not self.skip_missing:
            raise DataError(
                f"{summary}. Restore the files, or drop those images and triplets with `skip_missing` "
                f"(skip_missing=True in Python); `python -m sprc_lib check-data` lists every missing file."
            )
        self.missing_images = missing
        self.dropped_triplets = affected
        self.image_names = [n for n in self.image_names if n not in gone]
        self.triplets = [t for t in self.triplets if not gone.intersection(self.triplet_images(t))]
        if not self.image_names or (self.mode == "relative" and not self.triplets):
            raise DataError(f"{summary}; nothing usable is left. Check `data_path` and the image folders.")
        warnings.warn(f"{summary}; skipped them (skip_missing=True).", stacklevel=3)

    def load_image(self, name: str) -> Image.Image:
        """Open and decode one image as RGB; an unreadable file becomes a DataError naming it."""
        return load_rgb(self.image_path(name))

    def _image(self, name: str) -> torch.Tensor:
        assert self.preprocess is not None
        return self.preprocess(self.load_image(name))

    def __len__(self) -> int:
        return len(self.triplets) if self.mode == "relative" else len(self.image_names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.mode == "relative":  # the index names the triplet (per-sample prompts are looked up by it)
            return {"index": index, **self._relative_item(index)}
        name = self.image_names[index]
        item: dict[str, Any] = {"name": name}
        if self.preprocess is not None:
            item["image"] = self._image(name)
        return item

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name}, mode={self.mode}, "
            f"{len(self.triplets)} triplets, {len(self.image_names)} images)"
        )
