"""Data layer: CIRR and FashionIQ in their released layouts, transforms, captions, toy data, checks.

The names most code needs are importable from here, loaded on first use (so `sprc_lib.data.schema`,
which the command line's flags read, is imported without torch); `toy`, `check` and `schema` are
imported by path.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "collate": "base",
    "load_rgb": "base",
    "to_rgb": "base",
    "clean_caption": "captions",
    "fashioniq_eval_caption": "captions",
    "fashioniq_train_caption": "captions",
    "CIRRDataset": "cirr",
    "DataError": "errors",
    "FashionIQDataset": "fashioniq",
    "CIRRTriplet": "records",
    "FashionIQTriplet": "records",
    **{name: "transforms" for name in ("CLIP_MEAN", "CLIP_STD", "SquarePad", "TargetPad", "build_transform",
                                       "squarepad_transform", "targetpad_transform", "unnormalize")},
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'sprc_lib.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sprc_lib.data.{_HOMES[name]}"), name)
