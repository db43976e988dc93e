"""What a notebook needs to start, for its mode: the data, the cache, the model sizes, the weights, the device.

Every notebook calls `setup()` once, in the cell after its parameters, so the tiny and full tracks are
set up the same way in all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sprc_lib.course.toy_track import ensure_toy
from sprc_lib.env import pick_device
from sprc_lib.evaluation.context import EvalContext, evaluation_context
from sprc_lib.model import SPRCModel
from sprc_lib.model.loading import BLIP2_RETRIEVAL
from sprc_lib.paths import data_root
from sprc_lib.training.pretrain import TINY_BLIP2

MODES = ("tiny", "full")


def course_mode() -> str:
    """`tiny` (any CPU, minutes) unless `SPRC_MODE=full` asks for the paper-scale track."""
    mode = os.environ.get("SPRC_MODE", "tiny").strip().lower()
    if mode not in MODES:
        raise ValueError(f"SPRC_MODE={mode!r}: choose one of {MODES}")
    return mode


@dataclass(frozen=True)
class CourseSetup:
    """A notebook's mode and what follows from it."""

    mode: str
    data: Path  # the folder holding cirr_dataset/ and fashionIQ_dataset/
    cache: Path  # the frozen-ViT feature cache (on local disk, never a network drive)
    preset: str  # model sizes
    weights: str  # where SPRC training starts: the tiny BLIP-2 or BLIP-2 ViT-g
    device: torch.device

    def context(self, model: SPRCModel, tokenizer: Any, **options: Any) -> EvalContext:
        """`model` ready to evaluate on this set-up's device, with its feature cache."""
        return evaluation_context(model, tokenizer, device=self.device, feature_cache=self.cache, **options)


def setup(mode: str | None = None, data_path: str | Path | None = None) -> CourseSetup:
    """The set-up for `mode` (default: `course_mode()`).

    Tiny: the toy data and the pretrained tiny BLIP-2 (made if missing), and one CPU thread: on a busy
    2-core machine a tiny-model step took several times longer with two threads competing for the
    cores than with one. Full: the real data under `data_path` (default: data/ or $SPRC_DATA), BLIP-2.
    """
    mode = mode or course_mode()
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {MODES}")
    if mode == "tiny":
        data = ensure_toy()
        torch.set_num_threads(1)
        return CourseSetup(mode, data, data / "cache", "tiny", str(data / TINY_BLIP2), pick_device())
    data = Path(data_path) if data_path else data_root()
    return CourseSetup(mode, data, data_root() / "cache", "blip2-vitg", BLIP2_RETRIEVAL, pick_device())
