"""CIRRDataset and FashionIQDataset on the toy data: every split and mode, images, batching."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from sprc_lib.data import (
    CIRRDataset,
    FashionIQDataset,
    collate,
    fashioniq_eval_caption,
    targetpad_transform,
)
from sprc_lib.data.schema import (
    CIRR_DIR,
    FASHIONIQ_CATEGORIES,
    cirr_caption_path,
    cirr_split_path,
    fashioniq_caption_path,
    fashioniq_image_dir,
    fashioniq_split_path,
)

PREPROCESS = targetpad_transform(1.25, 32)
CIRR_RELATIVE = {"index", "pair_id", "reference_name", "caption", "group_members"}
CIRR_TARGETS = {"target_name", "target_soft"}
FIQ_RELATIVE = {"index", "reference_name", "captions", "caption", "dress_type"}


def load(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("split", ["train", "val", "test1"])
def test_cirr_relative_items_follow_the_caption_file(toy_root, split):
    ds = CIRRDataset(toy_root, split, "relative")
    records = load(cirr_caption_path(toy_root, split))
    assert len(ds) == len(records) == len(ds.triplets)
    for i in (0, len(ds) - 1):
        item, record = ds[i], records[i]
        expected = CIRR_RELATIVE | (CIRR_TARGETS if split != "test1" else set())
        assert set(item) == expected
        assert item["index"] == i and item["pair_id"] == record["pairid"]
        assert item["reference_name"] == record["reference"]
        assert item["caption"] == record["caption"]  # raw: cleaning is the model's tokenizer step
        assert item["group_members"] == record["img_set"]["members"]
        if split != "test1":
            assert item["target_name"] == record["target_hard"]
            assert item["target_soft"] == record["target_soft"]


@pytest.mark.parametrize("split", ["train", "val", "test1"])
def test_cirr_classic_items_are_the_split_file_in_order(toy_root, split):
    ds = CIRRDataset(toy_root, split, "classic")
    mapping = load(cirr_split_path(toy_root, split))
    assert ds.image_names == list(mapping) and len(ds) == len(mapping)
    assert ds[0] == {"name": next(iter(mapping))}
    name = ds.image_names[-1]
    assert ds.image_path(name) == toy_root / CIRR_DIR / mapping[name]
    image = ds.load_image(name)
    assert image.mode == "RGB" and image.size == Image.open(ds.image_path(name)).size


def test_cirr_train_images_live_in_numbered_subfolders(toy_root):
    ds = CIRRDataset(toy_root, "train", "classic")
    for name in ds.image_names[:50]:
        assert re.fullmatch(rf".*/{CIRR_DIR}/train/\d+/{name}\.png", ds.image_path(name).as_posix())


@pytest.mark.parametrize(
    ("split", "mode"),
    [("train", "relative"), ("test1", "relative"), ("val", "classic")],
)
def test_cirr_with_preprocess_adds_image_tensors(toy_root, split, mode):
    ds = CIRRDataset(toy_root, split, mode, preprocess=PREPROCESS)
    item = ds[3]
    keys = {"reference", "target"} if split != "test1" else {"reference"}
    for key in keys if mode == "relative" else {"image"}:
        assert item[key].shape == (3, 32, 32) and item[key].dtype == torch.float32
    assert "target" not in item or split != "test1"


@pytest.mark.parametrize("split", ["train", "val", "test1"])
@pytest.mark.parametrize("mode", ["relative", "classic"])
def test_cirr_batches_collate(toy_root, split, mode):
    ds = CIRRDataset(toy_root, split, mode, preprocess=PREPROCESS)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    if mode == "classic":
        assert len(batch["name"]) == 4 and batch["image"].shape == (4, 3, 32, 32)
        return
    assert batch["reference"].shape == (4, 3, 32, 32)
    assert isinstance(batch["caption"], list) and len(batch["caption"]) == 4
    assert batch["pair_id"].shape == (4,)
    assert [len(m) for m in batch["group_members"]] == [6] * 4  # one list of 6 per item
    if split != "test1":
        assert batch["target"].shape == (4, 3, 32, 32)
        assert [set(s) for s in batch["target_soft"]] == [{t} for t in batch["target_name"]]


def test_default_collate_handles_names_but_not_target_soft(toy_root):
    """Why `collate` exists: torch's default batches strings fine, but transposes member lists and
    fails on target_soft dicts whose keys differ."""
    classic = CIRRDataset(toy_root, "val", "classic")
    assert default_collate([classic[0], classic[1]]) == {"name": [classic[0]["name"], classic[1]["name"]]}
    relative = CIRRDataset(toy_root, "val", "relative")
    with pytest.raises(KeyError):
        default_collate([relative[0], relative[1]])
    members = [relative[0]["group_members"], relative[1]["group_members"]]
    assert collate([relative[0], relative[1]])["group_members"] == members


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_fashioniq_relative_items(toy_root, split):
    ds = FashionIQDataset(toy_root, split, ["dress", "toptee"], "relative")
    records = load(fashioniq_caption_path(toy_root, "dress", split)) + load(
        fashioniq_caption_path(toy_root, "toptee", split)
    )
    assert len(ds) == len(records)
    for i in (0, len(ds) - 1):
        item, record = ds[i], records[i]
        assert set(item) == FIQ_RELATIVE | ({"target_name"} if split != "test" else set())
        assert item["reference_name"] == record["candidate"] and item["captions"] == record["captions"]
        assert item["dress_type"] == ("dress" if i == 0 else "toptee")
        if split == "train":
            c0, c1 = (c.strip(".?, ") for c in record["captions"])
            forms = {f"{c0.capitalize()} and {c1}", f"{c1.capitalize()} and {c0}"}
            forms |= {c0.capitalize(), c1.capitalize()}
            assert item["caption"] in forms
        else:
            assert item["caption"] == fashioniq_eval_caption(*record["captions"])
            assert item.get("target_name") == record.get("target")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_fashioniq_classic_gallery_concatenates_categories(toy_root, split):
    ds = FashionIQDataset(toy_root, split, list(FASHIONIQ_CATEGORIES), "classic", preprocess=PREPROCESS)
    names = [n for c in FASHIONIQ_CATEGORIES for n in load(fashioniq_split_path(toy_root, c, split))]
    assert ds.image_names == names and len(ds) == len(names)
    item = ds[len(ds) - 1]
    assert item["name"] == names[-1] and item["image"].shape == (3, 32, 32)


def test_fashioniq_train_captions_are_reproducible_per_epoch(toy_root):
    ds = FashionIQDataset(toy_root, "train", ["shirt"], "relative", seed=3)
    epoch0 = [ds[i]["caption"] for i in range(200)]
    again = FashionIQDataset(toy_root, "train", ["shirt"], "relative", seed=3)  # e.g. a resumed run
    assert [again[i]["caption"] for i in range(200)] == epoch0
    ds.set_epoch(1)
    epoch1 = [ds[i]["caption"] for i in range(200)]
    assert epoch1 != epoch0
    ds.set_epoch(0)
    assert [ds[i]["caption"] for i in range(200)] == epoch0
    other_seed = FashionIQDataset(toy_root, "train", ["shirt"], "relative", seed=4)
    assert [other_seed[i]["caption"] for i in range(200)] != epoch0


def test_fashioniq_captions_are_the_same_in_dataloader_workers(toy_root):
    ds = FashionIQDataset(toy_root, "train", ["dress"], "relative", seed=1)
    ds.set_epoch(2)
    in_process = [ds[i]["caption"] for i in range(64)]
    subset = torch.utils.data.Subset(ds, range(64))
    loader = DataLoader(subset, batch_size=8, num_workers=2, collate_fn=collate)
    assert [c for batch in loader for c in batch["caption"]] == in_process


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_fashioniq_batches_collate(toy_root, split):
    ds = FashionIQDataset(toy_root, split, ["shirt"], "relative", preprocess=PREPROCESS)
    batch = next(iter(DataLoader(ds, batch_size=5, shuffle=True, collate_fn=collate)))
    assert batch["reference"].shape == (5, 3, 32, 32)
    assert len(batch["caption"]) == 5 and batch["dress_type"] == ["shirt"] * 5
    assert [len(c) for c in batch["captions"]] == [2] * 5
    assert ("target" in batch) == (split != "test")


def test_fashioniq_reads_jpg_and_prefers_png(toy_copy):
    image_dir = fashioniq_image_dir(toy_copy)
    names = load(fashioniq_split_path(toy_copy, "dress", "val"))
    as_jpg, both = names[0], names[1]
    png = image_dir / f"{as_jpg}.png"
    Image.open(png).save(image_dir / f"{as_jpg}.jpg", quality=95)
    png.unlink()
    Image.open(image_dir / f"{both}.png").save(image_dir / f"{both}.jpg")
    ds = FashionIQDataset(toy_copy, "val", ["dress"], "classic", preprocess=PREPROCESS)
    assert ds.image_path(as_jpg).name == f"{as_jpg}.jpg"
    assert ds.image_path(both).name == f"{both}.png"
    assert ds[0]["image"].shape == (3, 32, 32)
    assert ds.load_image(as_jpg).mode == "RGB"


def test_bad_arguments_are_refused(toy_root):
    with pytest.raises(ValueError, match="train, val, test1"):
        CIRRDataset(toy_root, "test", "relative")
    with pytest.raises(ValueError, match="relative, classic"):
        CIRRDataset(toy_root, "val", "triplets")
    with pytest.raises(ValueError, match="dress, shirt, toptee"):
        FashionIQDataset(toy_root, "val", ["dress", "shoes"], "relative")
    with pytest.raises(ValueError, match="list of categories"):
        FashionIQDataset(toy_root, "val", "dress", "relative")
    with pytest.raises(ValueError, match="train, val, test"):
        FashionIQDataset(toy_root, "val1", ["dress"], "relative")
