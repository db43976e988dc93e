"""Bad input stops with a message that names the file/record and says what to do; skip_missing drops
missing images and what uses them, and says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from sprc_lib.data import CIRRDataset, DataError, FashionIQDataset, collate, targetpad_transform
from sprc_lib.data.schema import (
    CIRR_DIR,
    cirr_caption_path,
    cirr_split_path,
    fashioniq_caption_path,
    fashioniq_image_dir,
    fashioniq_split_path,
)
from sprc_lib.data.toy import generate_toy_data

PREPROCESS = targetpad_transform(1.25, 32)


def load(path: Path):
    return json.loads(path.read_text())


def save(path: Path, data) -> None:
    path.write_text(json.dumps(data))


def test_missing_annotation_files_are_named(toy_copy):
    cirr_caption_path(toy_copy, "val").unlink()
    with pytest.raises(DataError, match=r"CIRR caption file not found: .*cap\.rc2\.val\.json.*`data_path`"):
        CIRRDataset(toy_copy, "val", "relative")
    cirr_split_path(toy_copy, "train").unlink()
    with pytest.raises(DataError, match=r"split\.rc2\.train\.json"):
        CIRRDataset(toy_copy, "train", "classic")
    fashioniq_caption_path(toy_copy, "shirt", "test").unlink()
    with pytest.raises(DataError, match=r"cap\.shirt\.test\.json"):
        FashionIQDataset(toy_copy, "test", ["dress", "shirt"], "classic")


def test_pointing_at_the_dataset_folder_itself_is_explained(toy_root):
    with pytest.raises(DataError, match="contains cirr_dataset/"):
        CIRRDataset(toy_root / CIRR_DIR, "val", "relative")


def test_invalid_json_is_named(toy_copy):
    path = fashioniq_caption_path(toy_copy, "dress", "val")
    path.write_text(path.read_text()[:-20])
    with pytest.raises(DataError, match=r"cap\.dress\.val\.json is not valid JSON"):
        FashionIQDataset(toy_copy, "val", ["dress"], "relative")


def break_cirr_record(root: Path, split: str, index: int, change) -> int:
    path = cirr_caption_path(root, split)
    records = load(path)
    change(records[index])
    save(path, records)
    return records[index].get("pairid")


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (lambda r: r.pop("caption"), "caption", "is missing"),
        (lambda r: r.update(caption=7), "caption", "must be a non-empty string, got 7"),
        (lambda r: r["img_set"].pop("reference_rank"), "reference_rank", "is missing"),
        (lambda r: r["img_set"]["members"].pop(), "img_set.members", "list of 6 image names, got 5 items"),
        (
            lambda r: r["img_set"]["members"].remove(r["reference"]) or r["img_set"]["members"].append("x"),
            "img_set.members",
            "must contain the reference",
        ),  # fmt: skip
        (lambda r: r.update(target_soft={"a": "yes"}), "target_soft", "must map image names to numbers"),
        (
            lambda r: r.update(target_hard="dev-0-0-img9"),
            "target_hard",
            "not in this split's image split file",
        ),
        (
            lambda r: r["img_set"]["members"].remove(r["target_hard"]) or r["img_set"]["members"].append("x"),
            "img_set.members",
            "must contain the target",
        ),  # fmt: skip
        (lambda r: r.update(img_set=[]), "img_set", "must be dict"),
    ],
)
def test_malformed_cirr_record_names_file_record_and_field(toy_copy, change, field, problem):
    pair_id = break_cirr_record(toy_copy, "val", 17, change)
    with pytest.raises(DataError) as err:
        CIRRDataset(toy_copy, "val", "relative")
    message = str(err.value)
    assert "cap.rc2.val.json" in message and f"record 17 (pairid {pair_id})" in message
    assert f"field '{field}'" in message and problem in message and "fix or remove that record" in message


def test_wrong_pairid_type_is_named(toy_copy):
    break_cirr_record(toy_copy, "test1", 0, lambda r: r.update(pairid="12"))
    with pytest.raises(DataError, match=r"record 0 \(pairid '12'\): field 'pairid' must be int, got '12'"):
        CIRRDataset(toy_copy, "test1", "relative")


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (lambda r: r.pop("target"), "target", "is missing"),
        (lambda r: r.update(captions=["only one"]), "captions", "exactly 2 strings"),
        (lambda r: r.update(captions=["a", None]), "captions", "exactly 2 strings"),
        (lambda r: r.update(target=123), "target", "must be a non-empty string, got 123"),
    ],
)
def test_malformed_fashioniq_record_names_file_record_and_field(toy_copy, change, field, problem):
    path = fashioniq_caption_path(toy_copy, "toptee", "train")
    records = load(path)
    change(records[5])
    save(path, records)
    with pytest.raises(DataError) as err:
        FashionIQDataset(toy_copy, "train", ["toptee"], "relative")
    message = str(err.value)
    assert (
        "cap.toptee.train.json" in message and f"record 5 (candidate '{records[5]['candidate']}')" in message
    )
    assert f"field '{field}'" in message and problem in message


def test_empty_fashioniq_captions_are_valid(toy_copy):
    """A few real captions are empty strings; they load, and the eval join still works."""
    path = fashioniq_caption_path(toy_copy, "shirt", "val")
    records = load(path)
    records[0]["captions"] = ["", "is red"]
    save(path, records)
    assert FashionIQDataset(toy_copy, "val", ["shirt"], "relative")[0]["caption"] == " and is red"


def delete_cirr_image(root: Path, split: str, name: str) -> Path:
    path = root / CIRR_DIR / load(cirr_split_path(root, split))[name]
    path.unlink()
    return path


def test_missing_cirr_image_stops_with_its_path(toy_copy):
    name = load(cirr_caption_path(toy_copy, "val"))[3]["target_hard"]
    path = delete_cirr_image(toy_copy, "val", name)
    with pytest.raises(DataError) as err:
        CIRRDataset(toy_copy, "val", "classic")
    message = str(err.value)
    assert (
        str(path) in message and "1 of 360 images are missing" in message and "skip_missing=True" in message
    )


def test_skip_missing_drops_cirr_images_and_their_triplets(toy_copy):
    records = load(cirr_caption_path(toy_copy, "val"))
    name = records[3]["target_hard"]
    users = sum(name in (r["reference"], r["target_hard"]) for r in records)
    delete_cirr_image(toy_copy, "val", name)
    with pytest.warns(
        UserWarning, match=rf"1 of 360 images are missing .*{name}.*; {users} of {len(records)}"
    ):
        ds = CIRRDataset(toy_copy, "val", "relative", preprocess=PREPROCESS, skip_missing=True)
    assert ds.missing_images == [name] and ds.dropped_triplets == users >= 1
    assert len(ds) == len(records) - users and name not in ds.image_names and len(ds.image_names) == 359
    assert all(name not in (t.reference, t.target) for t in ds.triplets)
    batches = list(DataLoader(ds, batch_size=64, collate_fn=collate))
    assert sum(len(b["caption"]) for b in batches) == len(ds)  # no batch shrinks
    with pytest.warns(UserWarning, match="1 of 360 images are missing"):
        assert len(CIRRDataset(toy_copy, "val", "classic", skip_missing=True)) == 359


def test_missing_fashioniq_images_stop_or_are_skipped(toy_copy):
    records = load(fashioniq_caption_path(toy_copy, "dress", "train"))
    gone = {records[0]["candidate"], records[1]["target"]}
    extra_gallery = next(n for n in load(fashioniq_split_path(toy_copy, "dress", "train")) if n not in gone)
    gone.add(extra_gallery)
    for name in gone:
        (fashioniq_image_dir(toy_copy) / f"{name}.png").unlink()
    users = sum(bool(gone & {r["candidate"], r["target"]}) for r in records)
    with pytest.raises(DataError, match=rf"3 of \d+ images are missing .*{fashioniq_image_dir(toy_copy)}"):
        FashionIQDataset(toy_copy, "train", ["dress"], "relative")
    with pytest.warns(UserWarning, match=rf"; {users} of {len(records)} triplets use them; skipped"):
        ds = FashionIQDataset(toy_copy, "train", ["dress"], "relative", skip_missing=True)
    assert set(ds.missing_images) == gone and len(ds) == len(records) - users
    assert not gone & set(ds.image_names)
    assert all(not gone & {t.reference, t.target} for t in ds.triplets)


def test_all_images_missing_is_an_error_even_with_skip_missing(toy_copy):
    for path in (toy_copy / CIRR_DIR / "test1").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="nothing usable is left"):
        CIRRDataset(toy_copy, "test1", "relative", skip_missing=True)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_image_is_named_when_loaded(toy_copy, damage):
    ds = CIRRDataset(toy_copy, "val", "relative", preprocess=PREPROCESS)
    path = ds.image_path(ds.triplets[0].reference)
    data = path.read_bytes()
    path.unlink()  # a hard link to the shared toy data: replace it, never write into it
    path.write_bytes(
        {"garbage": b"this is not a png", "truncated": data[: len(data) // 2], "empty": b""}[damage]
    )
    ds = CIRRDataset(toy_copy, "val", "relative", preprocess=PREPROCESS)  # existence only: still builds
    with pytest.raises(
        DataError, match=rf"cannot read image {re.escape(str(path))}.*check-data --verify-images"
    ):
        ds[0]
    with pytest.raises(DataError, match=re.escape(str(path))):
        ds.load_image(ds.triplets[0].reference)


def test_toy_generator_refuses_to_overwrite_other_data(tmp_path):
    (tmp_path / CIRR_DIR).mkdir()
    with pytest.raises(DataError, match="refusing to overwrite"):
        generate_toy_data(tmp_path)
    assert (tmp_path / CIRR_DIR).is_dir()


def test_a_toy_build_stopped_half_way_is_redone_not_refused(tmp_path, monkeypatch):
    from sprc_lib.data import toy

    drawn = []

    def render_then_stop(*args):
        if len(drawn) == 5:
            raise KeyboardInterrupt  # the user pressed Ctrl-C (or the machine went away) mid-build
        drawn.append(1)
        return real_render(*args)

    real_render = toy.toy_scenes.render
    monkeypatch.setattr(toy.toy_scenes, "render", render_then_stop)
    with pytest.raises(KeyboardInterrupt):
        generate_toy_data(tmp_path)
    assert (tmp_path / CIRR_DIR).is_dir() and not toy.is_complete(tmp_path)
    monkeypatch.setattr(toy.toy_scenes, "render", real_render)
    generate_toy_data(tmp_path)
    assert toy.is_complete(tmp_path)
