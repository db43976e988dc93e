"""The frozen-ViT feature cache: right tokens, reused, keyed (stale caches are never read), resumable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sprc_lib.data import CIRRDataset, build_transform
from sprc_lib.errors import UserError
from sprc_lib.features import CachedImages, FeatureCache
from sprc_lib.model.loading import new_model

SIZE = 64


@pytest.fixture()
def model():
    return new_model("tiny", vocab_size=50, seed=0).eval()


@pytest.fixture()
def gallery(toy_root):
    return CIRRDataset(toy_root, "val", "classic")


def paths(dataset, n=12):
    return [dataset.image_path(name) for name in dataset.image_names[:n]]


def test_tokens_are_the_vit_outputs(model, gallery, tmp_path):
    transform = build_transform("targetpad", SIZE)
    cache = FeatureCache(tmp_path, model, transform, dtype=torch.float32, chunk_size=5)
    cache.ensure(paths(gallery))
    names = gallery.image_names[:12]
    expected = model.vit(torch.stack([transform(gallery.load_image(n)) for n in names]))
    got = torch.stack([cache.token(gallery.image_path(n)) for n in names])
    assert torch.equal(got, expected)
    assert len(list(cache.dir.glob("chunk_*.npy"))) == 3  # 12 images in chunks of 5


def test_fp16_cache_is_close(model, gallery, tmp_path):
    transform = build_transform("targetpad", SIZE)
    cache = FeatureCache(tmp_path, model, transform)
    cache.ensure(paths(gallery, 4))
    token = cache.token(gallery.image_path(gallery.image_names[0]))
    assert token.dtype == torch.float16
    exact = model.vit(transform(gallery.load_image(gallery.image_names[0]))[None])[0]
    assert torch.allclose(token.float(), exact, atol=1e-2, rtol=1e-3)


def test_a_second_cache_reuses_the_first(model, gallery, tmp_path, monkeypatch):
    transform = build_transform("targetpad", SIZE)
    FeatureCache(tmp_path, model, transform).ensure(paths(gallery))
    again = FeatureCache(tmp_path, model, transform)
    assert again.missing(paths(gallery)) == []
    monkeypatch.setattr(FeatureCache, "_vit_tokens", lambda *a: pytest.fail("recomputed a cached image"))
    again.ensure(paths(gallery))


def test_backbone_transform_and_dtype_change_the_key(model, tmp_path):
    base = FeatureCache(tmp_path, model, build_transform("targetpad", SIZE)).dir
    assert FeatureCache(tmp_path, model, build_transform("squarepad", SIZE)).dir != base
    assert FeatureCache(tmp_path, model, build_transform("targetpad", SIZE, 1.5)).dir != base
    assert FeatureCache(tmp_path, model, build_transform("targetpad", SIZE), dtype=torch.float32).dir != base
    with torch.no_grad():
        model.vision_model.encoder.layers[0].mlp.fc1.weight[0, 0] += 1e-3
    assert FeatureCache(tmp_path, model, build_transform("targetpad", SIZE)).dir != base
    with torch.no_grad():
        model.vision_model.post_layernorm.weight += 1.0  # ln_vision is trainable and not part of the cache
        model.vision_model.encoder.layers[0].mlp.fc1.weight[0, 0] -= 1e-3
    assert FeatureCache(tmp_path, model, build_transform("targetpad", SIZE)).dir == base


def test_the_key_is_the_same_in_another_process(model, tmp_path):
    """A cache built in a notebook must be found by the CLI and by every torchrun process: no addresses in the key."""
    model.save_pretrained(tmp_path / "model")
    here = FeatureCache(tmp_path / "cache", model, build_transform("targetpad", SIZE)).dir
    script = (
        "import sys; from sprc_lib.data import build_transform; from sprc_lib.features import FeatureCache; "
        "from sprc_lib.model import SPRCModel; "
        "m = SPRCModel.from_pretrained(sys.argv[1]); "
        f"print(FeatureCache(sys.argv[2], m, build_transform('targetpad', {SIZE})).dir)"
    )
    there = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model"), str(tmp_path / "cache")],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(there) == here


def test_a_changed_image_is_computed_again(model, toy_copy, tmp_path):
    gallery = CIRRDataset(toy_copy, "val", "classic")
    transform = build_transform("targetpad", SIZE)
    cache = FeatureCache(tmp_path, model, transform, dtype=torch.float32)
    cache.ensure(paths(gallery, 3))
    first, second = gallery.image_path(gallery.image_names[0]), gallery.image_path(gallery.image_names[1])
    before = cache.token(first)
    os.unlink(first)  # the toy copy hard-links images: replace the file, never write into it
    gallery.load_image(gallery.image_names[1]).save(first)
    assert cache.missing(paths(gallery, 3)) == [first]
    cache.ensure(paths(gallery, 3))
    assert not torch.equal(cache.token(first), before)
    assert torch.equal(cache.token(first), cache.token(second))  # same pixels now


def test_an_interrupted_build_resumes(model, gallery, tmp_path, monkeypatch):
    transform = build_transform("targetpad", SIZE)
    cache = FeatureCache(tmp_path, model, transform, chunk_size=4)
    original, calls = FeatureCache._vit_tokens, []

    def crash_after_one_chunk(self, batch, device):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(batch))
        return original(self, batch, device)

    monkeypatch.setattr(FeatureCache, "_vit_tokens", crash_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        cache.ensure(paths(gallery, 10))
    monkeypatch.setattr(FeatureCache, "_vit_tokens", original)
    resumed = FeatureCache(tmp_path, model, transform, chunk_size=4)
    assert len(resumed) == 4 and len(resumed.missing(paths(gallery, 10))) == 6
    resumed.ensure(paths(gallery, 10))
    assert resumed.missing(paths(gallery, 10)) == []
    assert not list(resumed.dir.glob("*.tmp*"))


def test_clear_errors(model, gallery, tmp_path, toy_root):
    cache = FeatureCache(tmp_path, model, build_transform("targetpad", SIZE))
    with pytest.raises(KeyError, match="not in the feature cache"):
        cache.token(gallery.image_path(gallery.image_names[0]))
    with pytest.raises(ValueError, match="without `preprocess`"):
        CachedImages(CIRRDataset(toy_root, "val", "classic", preprocess=build_transform("targetpad", SIZE)), cache)
    with pytest.raises(ValueError, match="cache dtype"):
        FeatureCache(tmp_path, model, build_transform("targetpad", SIZE), dtype=torch.bfloat16)


def test_cached_dataset_items_keep_their_keys(model, toy_root, tmp_path):
    cache = FeatureCache(tmp_path, model, build_transform("targetpad", SIZE))
    items = CachedImages(CIRRDataset(toy_root, "val", "relative"), cache)
    item = items[0]
    assert item["reference"].shape == item["target"].shape == (65, 64)
    assert {"reference_name", "target_name", "caption"} <= set(item)


def test_a_damaged_or_missing_chunk_is_computed_again_never_read(model, gallery, tmp_path):
    transform = build_transform("targetpad", SIZE)
    cache = FeatureCache(tmp_path, model, transform, dtype=torch.float32, chunk_size=4)
    cache.ensure(paths(gallery, 8))
    expected = {p: cache.token(p) for p in paths(gallery, 8)}
    first, second = sorted(cache.dir.glob("chunk_*.npy"))
    first.write_bytes(first.read_bytes()[:100])  # a truncated chunk
    second.unlink()  # a chunk gone, its index left behind
    again = FeatureCache(tmp_path, model, transform, dtype=torch.float32, chunk_size=4)
    with pytest.warns(UserWarning, match="missing or damaged"):
        assert len(again.missing(paths(gallery, 8))) == 8
    again.ensure(paths(gallery, 8))
    assert all(torch.equal(again.token(p), t) for p, t in expected.items())
    assert len(list(again.dir.glob("chunk_*.npy"))) == len(list(again.dir.glob("chunk_*.json"))) == 2


def test_an_unreadable_chunk_index_drops_only_that_chunk(model, gallery, tmp_path):
    transform = build_transform("targetpad", SIZE)
    cache = FeatureCache(tmp_path, model, transform, chunk_size=4)
    cache.ensure(paths(gallery, 8))
    sorted(cache.dir.glob("chunk_*.json"))[0].write_text("[[")
    with pytest.warns(UserWarning, match="unreadable"):
        again = FeatureCache(tmp_path, model, transform, chunk_size=4)
    assert len(again) == 4 and len(again.missing(paths(gallery, 8))) == 4


def test_a_chunk_deleted_while_in_use_is_named(model, gallery, tmp_path):
    cache = FeatureCache(tmp_path, model, build_transform("targetpad", SIZE))
    cache.ensure(paths(gallery, 2))
    for chunk in cache.dir.glob("chunk_*.npy"):
        chunk.unlink()
    with pytest.warns(UserWarning), pytest.raises(UserError, match="went missing or was damaged"):
        cache.token(paths(gallery, 1)[0])


FILL = """
import sys, torch
torch.set_num_threads(1)
from sprc_lib import CIRRDataset, FashionIQDataset, build_transform, load_model
from sprc_lib.features import FeatureCache
model = load_model(sys.argv[1]).eval()
root, cache_dir, which = sys.argv[2:5]
if which == "cirr":
    dataset = CIRRDataset(root, "val", "classic")
else:
    dataset = FashionIQDataset(root, "val", ["dress"], "classic")
FeatureCache(cache_dir, model, build_transform("targetpad", 64), chunk_size=40).warm(dataset)
"""


@pytest.mark.slow
@pytest.mark.parametrize("pair", [("cirr", "fiq"), ("cirr", "cirr")], ids=["two datasets", "one dataset twice"])
def test_two_processes_fill_one_cache_at_once_as_one_would(pair, tiny_blip2, toy_root, tmp_path):
    """Two writers at once, on different datasets or the same one: every entry equals a one-process cache's."""
    from sprc_lib import FashionIQDataset, load_model

    shared = tmp_path / "shared"
    workers = [subprocess.Popen([sys.executable, "-c", FILL, str(tiny_blip2), str(toy_root), str(shared), which])
               for which in pair]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    model = load_model(tiny_blip2).eval()
    datasets = {"cirr": CIRRDataset(toy_root, "val", "classic"), "fiq": FashionIQDataset(toy_root, "val", ["dress"],
                                                                                         "classic")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same kernels, so the same bits
    try:
        alone = FeatureCache(tmp_path / "alone", model, build_transform("targetpad", SIZE), chunk_size=40)
        for which in dict.fromkeys(pair):
            alone.warm(datasets[which])
    finally:
        torch.set_num_threads(threads)
    together = FeatureCache(shared, model, build_transform("targetpad", SIZE))
    images = {p for which in pair for p in map(datasets[which].image_path, datasets[which].image_names)}
    assert together.missing(sorted(images)) == [] and len(together) == len(alone) == len(images)
    for path in images:
        assert torch.equal(together.token(path), alone.token(path)), path


def test_messages_show_paths_relative_to_where_the_user_is(tmp_path, monkeypatch):
    from sprc_lib.files import shown_path

    (tmp_path / "course" / "notebooks").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "course" / "notebooks")
    assert shown_path(tmp_path / "course" / "data" / "cache") == "../data/cache"  # a notebook's data folder
    assert shown_path(tmp_path / "course" / "notebooks" / "runs") == "runs"
    assert shown_path("/elsewhere/cache") == "/elsewhere/cache"  # far away: as given
