"""Data layer: CIRR and FashionIQ in their released layouts, transforms, captions, toy data, checks.

The names most code needs are re-exported here; `toy`, `check` and `schema` are imported by path.
"""

from sprc_lib.data.base import collate
from sprc_lib.data.captions import clean_caption, fashioniq_eval_caption, fashioniq_train_caption
from sprc_lib.data.cirr import CIRRDataset
from sprc_lib.data.errors import DataError
from sprc_lib.data.fashioniq import FashionIQDataset
from sprc_lib.data.records import CIRRTriplet, FashionIQTriplet
from sprc_lib.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    SquarePad,
    TargetPad,
    build_transform,
    squarepad_transform,
    targetpad_transform,
    unnormalize,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CIRRDataset",
    "CIRRTriplet",
    "DataError",
    "FashionIQDataset",
    "FashionIQTriplet",
    "SquarePad",
    "TargetPad",
    "build_transform",
    "clean_caption",
    "collate",
    "fashioniq_eval_caption",
    "fashioniq_train_caption",
    "squarepad_transform",
    "targetpad_transform",
    "unnormalize",
]
