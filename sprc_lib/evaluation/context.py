"""One evaluation context: everything scoring a model needs besides the data, built in one place.

The trainer, the command line, `make course`, the explorer and the notebooks all evaluate through an
`EvalContext`, so a model is always prepared the same way: on its device, the frozen ViT in fp16 on
a GPU (as the authors' code keeps it), the transform it was trained with, and the feature cache if any.

Small models score in float64 on a CPU (`exact`). Float32 sums come out with other last bits on another
CPU, with another thread count or batch size; two gallery images a few ulps apart then swap places, and
a recall moves by a query. In float64 those differences shrink to about 1e-16, far below any gap between
two scores that a ranking meets, so the tiny track's metrics are the same on every machine. At the tiny
preset's size it costs seconds; a real model (ViT-g and its Q-Former, over a billion parameters), for which
float64 would double the memory and cost far more time, keeps float32.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn
from torch.utils.data import Dataset

from sprc_lib.data.base import RetrievalDataset
from sprc_lib.data.schema import TARGET_RATIO, TRANSFORM
from sprc_lib.data.transforms import build_transform
from sprc_lib.env import autocast_dtype, pick_device
from sprc_lib.features import CachedImages, FeatureCache
from sprc_lib.model import SPRCModel

D = TypeVar("D", bound=RetrievalDataset)

EVAL_BATCH_SIZE = 32  # images or queries scored at once, unless told
EXACT_MAX_PARAMETERS = 20_000_000  # models up to this size score in float64 on a CPU (see above)


def scores_exactly(model: nn.Module, device: torch.device, precision: str) -> bool:
    """Whether evaluation runs in float64: `--precision auto` (the default), a CPU and a small model."""
    return (precision == "auto" and device.type == "cpu"
            and sum(p.numel() for p in model.parameters()) <= EXACT_MAX_PARAMETERS)


@dataclass
class EvalContext:
    """A model ready to score: tokenizer, preprocessing, device, autocast dtype, cache and batching."""

    model: SPRCModel
    tokenizer: Any
    preprocess: Callable
    device: torch.device
    dtype: torch.dtype | None = None
    cache: FeatureCache | None = None
    batch_size: int = EVAL_BATCH_SIZE
    num_workers: int = 0
    skip_missing: bool = False  # drop missing images and the queries that use them, and say so
    exact: bool = False  # score with a float64 copy of the model (`scores_exactly`)
    skipped: dict[str, dict] = field(default_factory=dict)  # what was dropped, by split

    @property
    def real_dtype(self) -> torch.dtype:
        """The dtype of index features and scores: float64 when scoring exactly, else float32."""
        return torch.float64 if self.exact else torch.float32

    def scorer(self) -> nn.Module:
        """The model as it scores: the model itself, or a float64 copy of its current weights when `exact`."""
        return copy.deepcopy(self.model).to(torch.float64).eval() if self.exact else self.model

    def load(self, dataset: type[D], root: str | Path, split: str, *args: Any) -> D:
        """A dataset built with the context's missing-image policy; what it dropped is noted in `skipped`."""
        return self.note(dataset(root, split, *args, skip_missing=self.skip_missing))

    def note(self, dataset: D) -> D:
        """Note what the missing-image policy dropped from `dataset` (a gallery's images, a split's queries)."""
        if dataset.missing_images:
            entry = self.skipped.setdefault(dataset.name, {})
            if dataset.mode == "relative":
                entry.update(queries=dataset.dropped_triplets, **{"listed queries": dataset.listed_triplets})
            else:
                entry.update(images=len(dataset.missing_images), **{"listed images": dataset.listed_images})
            entry["missing image names"] = sorted(set(entry.get("missing image names", [])) | set(
                dataset.missing_images))
        return dataset

    def skipped_lines(self) -> list[str]:
        """What the metrics were computed without, one line per split, for a person to read beside them."""
        lines = []
        for name, note in self.skipped.items():
            parts = [f"{note[k]:,} of {note[f'listed {k}']:,} {k}" for k in ("images", "queries") if k in note]
            lines.append(f"{name}: computed without {' and '.join(parts)} (missing images, `skip_missing`)")
        return lines

    def images(self, dataset: RetrievalDataset) -> Dataset:
        """Items of `dataset` (built without `preprocess`) with their images: pixels, or tokens from the cache."""
        if dataset.preprocess is not None:
            raise ValueError(f"{dataset.name}: build it without `preprocess`; the evaluation context adds the images")
        if self.cache is not None:
            return CachedImages(dataset, self.cache, self.device)
        with_pixels = copy.copy(dataset)
        with_pixels.preprocess = self.preprocess
        return with_pixels

    def warm(self, datasets: Iterable[RetrievalDataset]) -> None:
        """Fill the cache with every image of these datasets (a ViT pass for each one not cached yet)."""
        if self.cache is not None:
            for dataset in datasets:
                self.cache.warm(dataset, self.device)


class ScoringSettings(Protocol):
    """What scoring reads from the settings: `EvalSettings`, or a run's resolved `TrainConfig`."""

    device: str
    precision: str
    transform: str
    target_ratio: float
    feature_cache: str | None
    num_workers: int
    skip_missing: bool


@dataclass(frozen=True)
class EvalSettings:
    """How a model scores when no run or command decides it: the library's defaults."""

    device: str = "auto"
    precision: str = "auto"
    transform: str = TRANSFORM
    target_ratio: float = TARGET_RATIO
    feature_cache: str | None = None
    num_workers: int = 0
    skip_missing: bool = False


def make_eval_context(model: SPRCModel, tokenizer: Any, settings: ScoringSettings = EvalSettings(), *,
                      device: torch.device | None = None, batch_size: int = EVAL_BATCH_SIZE, exact: bool | None = None
                      ) -> EvalContext:
    """Prepare `model` for evaluation as `settings` say: move it, set the ViT's dtype, build its transform and cache.

    `device`: the one already picked (a training process's), else `settings.device`'s; `exact`: None follows
    `scores_exactly`, the trainer passes False (see `training.build`).
    """
    device = device or pick_device(settings.device)
    model.to(device).eval()
    if device.type == "cuda":
        model.set_vit_dtype(torch.float16)
    size = model.config.vision_config.image_size
    preprocess = build_transform(settings.transform, size, settings.target_ratio)
    exact = scores_exactly(model, device, settings.precision) if exact is None else exact
    cache = None if settings.feature_cache is None else FeatureCache(
        settings.feature_cache, model, preprocess, compute_dtype=torch.float64 if exact else torch.float32)
    return EvalContext(model, tokenizer, preprocess, device, autocast_dtype(settings.precision, device), cache,
                       batch_size, settings.num_workers, settings.skip_missing, exact)
