"""TargetPad / SquarePad geometry (CLIP4Cir arithmetic) and the CLIP preprocessing pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

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


def white(w: int, h: int) -> Image.Image:
    return Image.new("RGB", (w, h), (255, 255, 255))


def padding_of(image: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) widths of the black border around a white image."""
    a = np.asarray(image)[..., 0]
    cols, rows = np.flatnonzero(a.max(0)), np.flatnonzero(a.max(1))
    return int(cols[0]), int(rows[0]), a.shape[1] - 1 - int(cols[-1]), a.shape[0] - 1 - int(rows[-1])


@pytest.mark.parametrize(
    ("size", "expected_size", "expected_pad"),
    [
        # wide 101x61: ratio 1.66 >= 1.25; pad = int((101/1.25 - 61)/2) = int(9.9) = 9 above and below
        ((101, 61), (101, 79), (0, 9, 0, 9)),
        # tall, the same turned: the padding goes left and right
        ((61, 101), (79, 101), (9, 0, 9, 0)),
        # 127x63: int((101.6 - 63)/2) = int(19.3) = 19
        ((127, 63), (127, 101), (0, 19, 0, 19)),
        # exactly 1.25 (125x100): padded, but by int(0/2) = 0
        ((125, 100), (125, 100), (0, 0, 0, 0)),
    ],
)
def test_targetpad_pads_the_short_side_symmetrically(size, expected_size, expected_pad):
    out = TargetPad(1.25)(white(*size))
    assert out.size == expected_size
    assert padding_of(out) == expected_pad


@pytest.mark.parametrize("size", [(75, 61), (61, 75), (64, 64), (99, 80)])
def test_targetpad_leaves_images_below_the_ratio_alone(size):
    image = white(*size)
    assert TargetPad(1.25)(image) is image


def test_targetpad_rejects_a_ratio_below_one():
    with pytest.raises(ValueError, match="target_ratio"):
        TargetPad(0.8)


@pytest.mark.parametrize(
    ("size", "expected_size", "expected_pad"),
    [
        # odd difference 41: int(41/2) = 20 each side, one pixel short of square (as CLIP4Cir)
        ((101, 60), (101, 100), (0, 20, 0, 20)),
        ((60, 101), (100, 101), (20, 0, 20, 0)),
        # even difference: exactly square
        ((100, 60), (100, 100), (0, 20, 0, 20)),
        ((63, 63), (63, 63), (0, 0, 0, 0)),
    ],
)
def test_squarepad_geometry(size, expected_size, expected_pad):
    out = SquarePad()(white(*size))
    assert out.size == expected_size
    assert padding_of(out) == expected_pad


@pytest.mark.parametrize("make", [lambda: targetpad_transform(1.25, 32), lambda: squarepad_transform(32)])
@pytest.mark.parametrize("size", [(101, 61), (61, 101), (40, 40)])
def test_pipelines_give_normalised_square_tensors(make, size):
    out = make()(white(*size))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    white_value = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(out[:, 16, 16], white_value, atol=1e-5)


def test_targetpad_pipeline_keeps_black_bars_of_a_wide_image():
    out = targetpad_transform(1.25, 32)(white(101, 61))
    black = -torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD)
    assert torch.allclose(out[:, 0, 16], black, atol=1e-5)  # top bar
    assert torch.allclose(out[:, 31, 16], black, atol=1e-5)  # bottom bar


def test_pipelines_convert_to_rgb():
    assert targetpad_transform(1.25, 16)(Image.new("L", (20, 20), 128)).shape == (3, 16, 16)


def test_build_transform_by_name():
    image = white(101, 61)
    assert torch.equal(build_transform("targetpad", 24, 1.25)(image), targetpad_transform(1.25, 24)(image))
    assert torch.equal(build_transform("squarepad", 24)(image), squarepad_transform(24)(image))
    # the ratio reaches TargetPad: at 2.0 this image (ratio 1.66) is not padded at all
    assert not torch.equal(build_transform("targetpad", 24, 2.0)(image), targetpad_transform(1.25, 24)(image))
    with pytest.raises(ValueError, match="targetpad, squarepad"):
        build_transform("centercrop", 24)


def test_unnormalize_inverts_the_normalisation():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    out = unnormalize(targetpad_transform(1.25, 32)(Image.fromarray(pixels)))  # 32x32: no resize
    assert torch.allclose(out, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255, atol=1e-5)
    batch = torch.stack([targetpad_transform(1.25, 32)(Image.fromarray(pixels))] * 2)
    assert unnormalize(batch).shape == (2, 3, 32, 32)


GRAY = np.linspace(0, 1, 16 * 16).reshape(16, 16)  # a ramp from black to white


@pytest.mark.parametrize(
    ("mode", "values", "suffix"),
    [
        ("L", (GRAY * 255).round().astype(np.uint8), ".png"),
        ("I;16", (GRAY * 65535).round().astype(np.uint16), ".png"),  # a 16-bit grayscale PNG
        ("I;16", (GRAY * 65535).round().astype(np.uint16), ".tif"),
        ("I", (GRAY * 65535).round().astype(np.int32), ".tif"),  # 32-bit ints holding 16-bit values
        ("F", GRAY.astype(np.float32), ".tif"),  # floats in 0..1
        ("1", GRAY > 0.5, ".png"),
    ],
)
def test_every_image_mode_loads_as_8_bit_rgb_with_its_brightness(tmp_path, mode, values, suffix):
    from sprc_lib.data.base import load_rgb

    path = tmp_path / f"image{suffix}"
    image = Image.fromarray(values)
    if image.mode != mode:
        image = image.convert(mode)
    image.save(path)
    with Image.open(path) as opened:
        stored = opened.mode
    loaded = np.asarray(load_rgb(path), dtype=np.float64)
    assert loaded.shape == (16, 16, 3) and load_rgb(path).mode == "RGB"
    expected = (GRAY > 0.5) * 255.0 if mode == "1" else GRAY * 255
    assert np.abs(loaded[..., 0] - expected).max() <= 1.0, (stored, loaded.mean(), expected.mean())


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "CMYK", "YCbCr"])
def test_8_bit_modes_convert_as_the_authors_code_does(tmp_path, mode):
    from sprc_lib.data.base import load_rgb

    rgb = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    image = rgb.convert(mode)
    path = tmp_path / ("image.jpg" if mode in ("CMYK", "YCbCr") else "image.png")
    image.save(path)
    with Image.open(path) as opened:
        assert np.array_equal(np.asarray(load_rgb(path)), np.asarray(opened.convert("RGB")))
