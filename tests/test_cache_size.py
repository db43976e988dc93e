"""The feature cache states its size before filling, and refuses, having written nothing, when the disk is short."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sprc_lib.data import CIRRDataset, build_transform
from sprc_lib.errors import UserError
from sprc_lib.features import DISK_MARGIN, FeatureCache, cache_bytes
from sprc_lib.files import shown_path
from sprc_lib.model import preset_config
from sprc_lib.model.loading import new_model

SIZE = 64


@pytest.fixture()
def cache(tmp_path: Path) -> FeatureCache:
    return FeatureCache(tmp_path, new_model("tiny", vocab_size=50, seed=0).eval(), build_transform("targetpad", SIZE))


@pytest.fixture()
def gallery(toy_root: Path) -> CIRRDataset:
    return CIRRDataset(toy_root, "val", "classic")


def free_space(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """The cache's disk reports `free` bytes free."""
    monkeypatch.setattr("sprc_lib.features.shutil.disk_usage",
                        lambda path: SimpleNamespace(total=10**13, used=10**13 - free, free=free))


def needed(cache: FeatureCache, n_images: int) -> int:
    tokens, width = cache.token_shape
    return cache_bytes(n_images, tokens, width)


def test_the_estimate_at_paper_scale():
    vision = preset_config("blip2-vitg", 32).vision_config  # the paper's ViT-g at 224 px
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1  # the patches and the class token
    assert (tokens, vision.hidden_size) == (257, 1408)
    cirr_train_and_val = 16_939 + 2_297
    assert cache_bytes(cirr_train_and_val, tokens, vision.hidden_size) == 257 * 1408 * 2 * cirr_train_and_val
    assert cache_bytes(1, 257, 1408, bytes_per_value=4) == 257 * 1408 * 4  # an fp32 cache


def test_warm_refuses_when_the_disk_is_short_and_writes_nothing(cache, gallery, monkeypatch, capsys):
    n = len(gallery.image_names)
    free_space(monkeypatch, needed(cache, n) + DISK_MARGIN - 1)
    monkeypatch.setattr(FeatureCache, "_vit_tokens", lambda *a: pytest.fail("computed an image the disk cannot hold"))
    with pytest.raises(UserError) as err:
        cache.warm(gallery)
    message = str(err.value)
    assert str(cache.dir) in message and f"need {needed(cache, n) / 1e9:.1f} GB" in message
    assert "GB are free there" in message and "`feature_cache`" in message and "never Google Drive" in message
    assert not list(cache.dir.glob("chunk_*")) and len(cache) == 0
    assert f"feature cache: {n:,} images" in capsys.readouterr().out  # the size was said first


def test_warm_states_its_size_then_fills_the_cache(cache, gallery, monkeypatch, capsys):
    names = gallery.image_names
    n, tokens, width = len(names), *cache.token_shape
    free_space(monkeypatch, needed(cache, n) + DISK_MARGIN)  # just enough
    cache.ensure([gallery.image_path(name) for name in names[:5]])
    capsys.readouterr()
    cache.warm(gallery)
    out = capsys.readouterr().out
    assert (f"feature cache: {n:,} images x {tokens} tokens x {width} x 2 bytes = {needed(cache, n) / 2**20:.1f} MiB "
            f"(computing {n - 5:,} new, {needed(cache, n - 5) / 2**20:.1f} MiB) in {shown_path(cache.dir)}") in out
    assert cache.missing([gallery.image_path(name) for name in names]) == []
    assert cache.token(gallery.image_path(names[-1])).dtype == torch.float16
    chunks = list(cache.dir.glob("chunk_*.npy"))
    headers = sum(f.stat().st_size for f in chunks) - needed(cache, n)
    assert 0 <= headers <= 128 * len(chunks)  # the estimate is what the chunks hold, bar their .npy headers
    cache.warm(gallery)
    assert capsys.readouterr().out == ""  # nothing to compute: nothing to say


def test_a_size_is_said_in_gb_when_real_and_in_mib_when_toy():
    from sprc_lib.features import size_text

    assert size_text(361 * 10**9) == "361.0 GB" and size_text(17 * 2**20) == "17.0 MiB"
