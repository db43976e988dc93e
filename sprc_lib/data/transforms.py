"""Image preprocessing exactly as CLIP4Cir/SPRC do it: pad, resize, crop, CLIP-normalise."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from sprc_lib.data.base import to_rgb
from sprc_lib.data.schema import TARGET_RATIO

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

TRANSFORMS = ("targetpad", "squarepad")


class TargetPad:
    """Zero-pad the short side only when the aspect ratio is at least `target_ratio`, up to that ratio.

    Nearly-square images stay untouched while very wide or tall ones keep their content after the
    centre crop. Padding per side is `int((long / target_ratio - short) / 2)`, as in the reference.
    """

    def __init__(self, target_ratio: float) -> None:
        if target_ratio < 1:
            raise ValueError(f"target_ratio must be >= 1 (long side / short side), got {target_ratio}")
        self.target_ratio = target_ratio

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if max(w, h) / min(w, h) < self.target_ratio:
            return image
        scaled = max(w, h) / self.target_ratio
        hp = max(int((scaled - w) / 2), 0)
        vp = max(int((scaled - h) / 2), 0)
        return F.pad(image, [hp, vp, hp, vp], fill=0, padding_mode="constant")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_ratio={self.target_ratio})"


class SquarePad:
    """Zero-pad to (nearly) square: `int((max - side) / 2)` on both ends of the short side.

    Like CLIP4Cir, an odd difference leaves the result one pixel short of square; the crop after it
    absorbs that.
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        side = max(w, h)
        hp = int((side - w) / 2)
        vp = int((side - h) / 2)
        return F.pad(image, [hp, vp, hp, vp], fill=0, padding_mode="constant")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ToRGB:
    """`to_rgb` with a stable repr: the feature cache keys on `repr(transform)`, so no addresses."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return to_rgb(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _clip_tail(dim: int) -> list[Callable]:
    return [
        Resize(dim, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(dim),
        ToRGB(),
        ToTensor(),
        Normalize(CLIP_MEAN, CLIP_STD),
    ]


def targetpad_transform(target_ratio: float, dim: int) -> Compose:
    """TargetPad, then the CLIP pipeline at `dim` pixels: the reference's default preprocessing."""
    return Compose([TargetPad(target_ratio), *_clip_tail(dim)])


def squarepad_transform(dim: int) -> Compose:
    """SquarePad, then the CLIP pipeline at `dim` pixels."""
    return Compose([SquarePad(), *_clip_tail(dim)])


def build_transform(name: str, dim: int, target_ratio: float = TARGET_RATIO) -> Compose:
    """The transform named by the seed's `--transform` flag."""
    if name == "targetpad":
        return targetpad_transform(target_ratio, dim)
    if name == "squarepad":
        return squarepad_transform(dim)
    raise ValueError(f"unknown transform {name!r}: choose one of {', '.join(TRANSFORMS)}")


def unnormalize(tensor: torch.Tensor) -> torch.Tensor:
    """Undo the CLIP normalisation of a (..., 3, H, W) tensor into [0, 1], for plotting."""
    mean = torch.tensor(CLIP_MEAN, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
    return (tensor * std + mean).clamp(0, 1)
