"""The toy datasets: real layouts and schemas, true captions, pictures that show them, determinism, sizes.

Caption truth is checked by decoding each caption with this file's own vocabulary (written from the
meaning of the words, not imported from the generator), applying the decoded edits to the
regenerated reference attributes, and comparing with the target's attributes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sprc_lib.course import examples
from sprc_lib.data import schema
from sprc_lib.data.toy import SIZES, toy_specs
from sprc_lib.data.toy import cirr as toy_cirr
from sprc_lib.data.toy import fashioniq as toy_fashioniq
from sprc_lib.data.toy import scenes as toy_scenes

# ---------------------------------------------------------------- layout and schemas


def shape_of(value):
    """The type structure of a JSON value: dict keys and value types, nested; lists by element."""
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in value.items()}
    if isinstance(value, list):
        shapes = {json.dumps(shape_of(v), sort_keys=True) for v in value}
        assert len(shapes) == 1, f"mixed list {value!r}"
        return [shape_of(value[0])]
    return type(value).__name__


def soft_free(record: dict) -> dict:
    """`target_soft` is keyed by image names; compare its value types, not its keys."""
    out = dict(record)
    if "target_soft" in out:
        out["target_soft"] = {"<name>": shape_of(next(iter(out["target_soft"].values())))}
    return out


def load(path: Path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("split", schema.CIRR_SPLITS)
def test_cirr_records_have_the_real_schema(toy_root, split):
    example = examples.CIRR_TEST_EXAMPLE_RECORD if split == "test1" else examples.CIRR_EXAMPLE_RECORD
    records = load(schema.cirr_caption_path(toy_root, split))
    assert records
    for record in records:
        assert list(record) == list(example)  # same keys, same order
        assert list(record["img_set"]) == list(example["img_set"])
        assert shape_of(soft_free(record)) == shape_of(soft_free(example))
        members = record["img_set"]["members"]
        assert len(members) == 6 and len(set(members)) == 6 and record["reference"] in members
        if split != "test1":
            assert record["target_hard"] in members
            assert record["target_soft"] == {record["target_hard"]: 1.0}


@pytest.mark.parametrize("split", schema.CIRR_SPLITS)
def test_cirr_split_files_have_the_real_layout(toy_root, split):
    mapping = load(schema.cirr_split_path(toy_root, split))
    assert shape_of(mapping) == {k: "str" for k in mapping}
    folder = {"train": "train", "val": "dev", "test1": "test1"}[split]
    sub = r"(\d+)/" if split == "train" else ""
    pattern = re.compile(rf"\./{folder}/{sub}({folder}-\d+-\d-img[01])\.png")
    subfolders = set()
    for name, rel in mapping.items():
        match = pattern.fullmatch(rel)
        assert match and match.group(match.lastindex) == name, rel
        assert (toy_root / schema.CIRR_DIR / rel).is_file()
        if split == "train":
            subfolders.add(int(match.group(1)))
    if split == "train":
        assert subfolders <= set(range(100)) and len(subfolders) > 90


def test_cirr_pair_ids_are_unique_across_splits(toy_root):
    ids = [r["pairid"] for s in schema.CIRR_SPLITS for r in load(schema.cirr_caption_path(toy_root, s))]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("category", schema.FASHIONIQ_CATEGORIES)
@pytest.mark.parametrize("split", schema.FASHIONIQ_SPLITS)
def test_fashioniq_files_have_the_real_schema(toy_root, category, split):
    example = examples.FASHIONIQ_TEST_EXAMPLE_RECORD if split == "test" else examples.FASHIONIQ_EXAMPLE_RECORD
    records = load(schema.fashioniq_caption_path(toy_root, category, split))
    assert records
    for record in records:
        assert list(record) == list(example) and shape_of(record) == shape_of(example)
        assert len(record["captions"]) == 2
    names = load(schema.fashioniq_split_path(toy_root, category, split))
    assert shape_of(names) == shape_of(examples.FASHIONIQ_SPLIT_EXAMPLE)
    image_dir = schema.fashioniq_image_dir(toy_root)
    for name in names:
        assert re.fullmatch(r"B[0-9A-Z]{9}", name)
        assert (image_dir / f"{name}.png").is_file()


def test_fashioniq_names_are_unique_across_categories_and_splits(toy_root):
    names = [
        n
        for c in schema.FASHIONIQ_CATEGORIES
        for s in schema.FASHIONIQ_SPLITS
        for n in load(schema.fashioniq_split_path(toy_root, c, s))
    ]
    assert len(names) == len(set(names))
    assert len(list(schema.fashioniq_image_dir(toy_root).iterdir())) == len(names)


# ---------------------------------------------------------------- sizes and determinism


def test_default_size_meets_the_minimums(toy_root):
    cirr = {s: load(schema.cirr_split_path(toy_root, s)) for s in schema.CIRR_SPLITS}
    cirr_triplets = {s: load(schema.cirr_caption_path(toy_root, s)) for s in schema.CIRR_SPLITS}
    assert len(cirr["val"]) >= 300 and len(cirr["test1"]) >= 300
    assert 2000 <= len(cirr_triplets["train"]) <= 3000
    assert 1500 <= len(cirr["train"]) <= 2000
    assert len(cirr_triplets["val"]) >= 300
    for category in schema.FASHIONIQ_CATEGORIES:
        val_images = load(schema.fashioniq_split_path(toy_root, category, "val"))
        val = load(schema.fashioniq_caption_path(toy_root, category, "val"))
        train = load(schema.fashioniq_caption_path(toy_root, category, "train"))
        assert len(val) >= 150 and 3 * len(val) <= len(val_images) <= 5 * len(val)  # a gallery bigger than queries
        assert 600 <= len(train) <= 1000


def test_medium_is_three_to_four_times_small():
    small, medium = SIZES["small"], SIZES["medium"]
    for split in schema.CIRR_SPLITS:
        assert 3 <= medium.cirr_sets[split] / small.cirr_sets[split] <= 4
    assert 3 <= medium.fiq_train_queries / small.fiq_train_queries <= 4
    assert 3 <= medium.fiq_eval_images / small.fiq_eval_images <= 4


def test_specs_are_deterministic_for_a_seed_and_differ_between_seeds(toy_spec):
    assert toy_specs(0, "small") == toy_spec
    other = toy_specs(1, "small")
    assert other.cirr["val"].queries != toy_spec.cirr["val"].queries
    assert other.fashioniq[("dress", "val")].images != toy_spec.fashioniq[("dress", "val")].images


def test_written_files_are_a_function_of_the_specs(toy_root, toy_spec):
    """Files = specs rendered and serialised, so deterministic specs mean deterministic files."""
    for split, part in toy_spec.cirr.items():
        records = [toy_cirr.query_record(q, split != "test1") for q in part.queries]
        assert load(schema.cirr_caption_path(toy_root, split)) == records
        assert load(schema.cirr_split_path(toy_root, split)) == {i.name: i.relpath for i in part.images}
        for image in part.images[:20]:
            on_disk = np.asarray(Image.open(toy_root / schema.CIRR_DIR / image.relpath))
            assert np.array_equal(on_disk, np.asarray(toy_scenes.render(image.scene, image.look)))
    for (category, split), part in toy_spec.fashioniq.items():
        records = [toy_fashioniq.query_record(q, split != "test") for q in part.queries]
        assert load(schema.fashioniq_caption_path(toy_root, category, split)) == records
        for image in part.images[:10]:
            on_disk = np.asarray(Image.open(schema.fashioniq_image_dir(toy_root) / f"{image.name}.png"))
            assert np.array_equal(on_disk, np.asarray(toy_fashioniq.render(image.garment, image.look)))


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="small, medium"):
        toy_specs(0, "huge")


# ---------------------------------------------------------------- CIRR captions are true

KIND = {"circle": "circle", "disc": "circle", "square": "square", "box": "square", "triangle": "triangle",
        "diamond": "diamond", "rhombus": "diamond"}  # fmt: skip
COLOR = {c: c for c in ("red", "orange", "yellow", "green", "blue", "purple", "pink")} | {"violet": "purple"}
DIRECTION = {"left": "left", "leftwards": "left", "right": "right", "rightwards": "right", "up": "up",
             "upwards": "up", "higher": "up", "down": "down", "downwards": "down",
             "lower": "down"}  # fmt: skip
STEP = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # row 0: top; column 0: left
SIZE = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
BIGGER, SMALLER = {"bigger", "larger", "enlarge", "increase"}, {"smaller", "shrink", "reduce"}
REMOVE, ADD = {"remove", "delete", "erase", "gone", "rid", "away"}, {"add", "put", "insert", "include"}


def clauses(caption: str) -> list[list[str]]:
    text = caption.lower().rstrip(".")
    text = text.removeprefix("please ")
    parts = re.split(r"; also |, then | and then | and also | and ", text)
    return [part.split() for part in parts]


def decode_cirr(caption: str, scene: toy_scenes.Scene) -> toy_scenes.Scene:
    """Apply what the caption says to `scene`, clause by clause; fail on anything not true of it."""
    shapes = {s.kind: s for s in scene.shapes}
    last = None
    for words in clauses(caption):
        kinds = [KIND[w] for w in words if w in KIND]
        colors = [COLOR[w] for w in words if w in COLOR]
        if REMOVE & set(words):
            (kind,) = kinds
            assert all(c == shapes[kind].color for c in colors), caption
            del shapes[kind]
            last = None
            continue
        if ADD & set(words):
            (kind,), (color,) = kinds, colors
            row = 0 if "top" in words else 2 if "bottom" in words else 1
            col = 0 if "left" in words else 2 if "right" in words else 1
            (size,) = [SIZE[w] for w in words if w in SIZE]
            assert kind not in shapes and (row, col) not in {(s.row, s.col) for s in shapes.values()}, caption
            shapes[kind] = toy_scenes.Shape(kind, color, size, row, col)
            last = kind
            continue
        kind = last if "it" in words else kinds[0]
        old = shapes.pop(kind)
        if len(kinds) == 2 or ("it" in words and len(kinds) == 1):
            new = replace(old, kind=kinds[-1])
            assert all(c == old.color for c in colors), caption
        elif set(words) & set(DIRECTION):
            (direction,) = [DIRECTION[w] for w in words if w in DIRECTION]
            d_row, d_col = STEP[direction]
            new = replace(old, row=old.row + d_row, col=old.col + d_col)
            assert 0 <= new.row < 3 and 0 <= new.col < 3, caption
            assert all(c == old.color for c in colors), caption
        elif set(words) & (BIGGER | SMALLER):
            new = replace(old, size="large" if set(words) & BIGGER else "small")
            assert new.size != old.size and all(c == old.color for c in colors), caption
        else:
            new = replace(old, color=colors[-1])
            assert new.color != old.color and all(c == old.color for c in colors[:-1]), caption
        assert new.kind not in shapes and (new.row, new.col) not in {(s.row, s.col) for s in shapes.values()}
        shapes[new.kind] = new
        last = new.kind
    return replace(scene, shapes=tuple(sorted(shapes.values())))


@pytest.mark.parametrize("split", schema.CIRR_SPLITS)
def test_every_cirr_caption_states_the_true_difference(toy_root, toy_spec, split):
    part = toy_spec.cirr[split]
    scenes = {image.name: image.scene for image in part.images}
    records = load(schema.cirr_caption_path(toy_root, split))
    assert len(records) == len(part.queries)
    for record, query in zip(records, part.queries, strict=True):
        assert record["reference"] == query.reference  # spec and file agree on which query this is
        target = record.get("target_hard", query.target)  # test1 hides it; the spec knows it
        decoded = decode_cirr(record["caption"], scenes[record["reference"]])
        assert decoded == scenes[target], record
        assert scenes[record["reference"]] != scenes[target]


def scene_features(scene: toy_scenes.Scene) -> np.ndarray:
    """What an image-only model could see: per grid cell, one-hot colour, kind and size; the background."""
    colors, kinds, backgrounds = list(COLOR_NAMES), list(KIND_NAMES), sorted(toy_scenes.BACKGROUNDS)
    v = np.zeros(9 * 13 + len(backgrounds))
    for s in scene.shapes:
        cell = (s.row * 3 + s.col) * 13
        v[[cell + colors.index(s.color), cell + 7 + kinds.index(s.kind), cell + 11 + (s.size == "large")]] = 1
    v[9 * 13 + backgrounds.index(scene.background)] = 1
    return v


COLOR_NAMES = ("red", "orange", "yellow", "green", "blue", "purple", "pink")
KIND_NAMES = ("circle", "square", "triangle", "diamond")


@pytest.mark.parametrize("split", ["val", "test1"])
def test_cirr_targets_are_unique_but_not_guessable_from_the_reference(toy_spec, split):
    """Every scene occurs once in a split, so reference + caption pick one image; but ranking by the
    reference alone (L1 distance of per-cell features, ties split evenly) finds the target rarely at
    rank 1 and only at chance level within its 6-image set."""
    part = toy_spec.cirr[split]
    names = [image.name for image in part.images]
    assert len({image.scene for image in part.images}) == len(names)
    index = {name: i for i, name in enumerate(names)}
    features = np.stack([scene_features(image.scene) for image in part.images])
    r1, rs1 = [], []
    for q in part.queries:
        d = np.abs(features - features[index[q.reference]]).sum(1)
        d[index[q.reference]] = np.inf  # the reference is removed from its ranking, as in CIRR
        t = d[index[q.target]]
        r1.append((d < t).sum() == 0 and 1 / (d == t).sum())
        subset = np.array([d[index[m]] for m in q.members if m != q.reference])
        rs1.append((subset < t).sum() == 0 and 1 / (subset == t).sum())
    assert np.mean(r1) < 0.15
    assert np.mean(rs1) < 0.25  # chance: 1 in 5


def test_cirr_captions_vary_in_wording(toy_spec):
    masked = set()
    captions = [q.caption for q in toy_spec.cirr["train"].queries]
    vocabulary = set(KIND) | set(COLOR) | set(DIRECTION) | set(SIZE) | {"top", "bottom", "center", "middle"}
    for caption in captions:
        for words in clauses(caption):
            masked.add(" ".join("_" if w in vocabulary else w for w in words))
    assert len(set(captions)) / len(captions) > 0.8
    assert len(masked) >= 40  # many phrasings, not one template per edit


# ---------------------------------------------------------------- CIRR pictures show the scenes


def blob(pixels: np.ndarray, color: tuple[int, int, int], cx: float, cy: float, reach: float) -> np.ndarray:
    """Coordinates of `color` pixels within `reach` of (cx, cy): one cell of the grid."""
    ys, xs = np.nonzero((pixels == color).all(-1))
    keep = (abs(xs - cx) <= reach) & (abs(ys - cy) <= reach)
    return np.stack([xs[keep], ys[keep]], 1)


def test_cirr_images_draw_each_shape_where_and_as_the_scene_says(toy_spec):
    assert toy_scenes.GRID[0] < 0.5 == toy_scenes.GRID[1] < toy_scenes.GRID[2]  # column 0 left, row 0 top
    for image in toy_spec.cirr["val"].images[:120]:
        pixels = np.asarray(toy_scenes.render(image.scene, image.look))
        w, h = image.look.width, image.look.height
        short = min(w, h)
        jitter = {kind: (dx, dy) for kind, dx, dy in image.look.jitter}
        for s in image.scene.shapes:
            cx = (toy_scenes.GRID[s.col] + jitter[s.kind][0]) * w
            cy = (toy_scenes.GRID[s.row] + jitter[s.kind][1]) * h
            points = blob(pixels, toy_scenes.COLORS[s.color], cx, cy, 0.135 * short)
            assert len(points), (image.name, s)
            x0, y0 = points.min(0)
            x1, y1 = points.max(0)
            extent = max(x1 - x0 + 1, y1 - y0 + 1) / short
            assert (extent > 0.215) == (s.size == "large"), (image.name, s, extent)
            fill = len(points) / ((x1 - x0 + 1) * (y1 - y0 + 1))
            widest_row = np.bincount(points[:, 1] - y0).argmax() / (y1 - y0)
            kind = (
                "square" if fill > 0.9
                else "circle" if fill > 0.65
                else "triangle" if widest_row > 0.8
                else "diamond"
            )  # fmt: skip
            assert kind == s.kind, (image.name, s, fill, widest_row)


# ---------------------------------------------------------------- FashionIQ captions are true

GARMENT_COLORS = {"red", "orange", "yellow", "green", "blue", "purple", "pink", "black", "white", "gray"}
SLEEVE_ORDER = ("sleeveless", "short", "long")


def decode_fashioniq(caption: str) -> dict[str, str]:
    """What one caption claims about the target: attribute -> value (or 'shorter'/'longer' sleeves)."""
    text = caption.lower()
    claims = {}

    def claim(attribute: str, value: str) -> None:
        assert claims.get(attribute, value) == value, caption
        claims[attribute] = value

    for match in re.finditer(r"\b(sleeveless|no sleeves|(short|long)(er)? sleeve[sd])\b", text):
        phrase = match.group(1)
        claim("sleeves", "sleeveless" if phrase in ("sleeveless", "no sleeves") else phrase.split()[0])
    text = re.sub(r"\b(sleeveless|no sleeves|(short|long)(er)? sleeve[sd])\b", " ", text)
    for word in re.findall(r"[a-z-]+", text):
        if word in GARMENT_COLORS:
            claim("color", word)
    patterns = {"stripes": "stripe", "dots": "dot", "checks": "check|plaid", "solid": "plain|solid|no pat"}
    for value, pattern in patterns.items():
        if re.search(pattern, text):
            claim("pattern", value)
    details = {
        "short": r"\bshorter\b|short dress|mini|above the knee",
        "long": r"\blonger\b|long dress|maxi|floor length",
        "no pocket": r"no pockets?|without a pocket",
        "v-neck": r"v-neck|v neck",
        "round neck": r"round neck|crew neck",
    }
    for value, pattern in details.items():
        if re.search(pattern, text):
            claim("detail", value)
    if "pocket" in text and "detail" not in claims:
        claim("detail", "pocket")
    return claims


def claim_holds(attribute: str, value: str, ref: toy_fashioniq.Garment, tgt: toy_fashioniq.Garment) -> bool:
    if attribute == "sleeves" and value in ("shorter", "longer"):
        step = SLEEVE_ORDER.index(tgt.sleeves) - SLEEVE_ORDER.index(ref.sleeves)
        return step == (1 if value == "longer" else -1)
    return getattr(tgt, attribute) == value and getattr(ref, attribute) != value


@pytest.mark.parametrize("category", schema.FASHIONIQ_CATEGORIES)
@pytest.mark.parametrize("split", schema.FASHIONIQ_SPLITS)
def test_every_fashioniq_caption_pair_states_the_true_difference(toy_root, toy_spec, category, split):
    part = toy_spec.fashioniq[(category, split)]
    garments = {image.name: image.garment for image in part.images}
    records = load(schema.fashioniq_caption_path(toy_root, category, split))
    assert len(records) == len(part.queries)
    for record, query in zip(records, part.queries, strict=True):
        assert record["candidate"] == query.reference
        ref, tgt = garments[record["candidate"]], garments[record.get("target", query.target)]
        changed = {a for a in toy_fashioniq.ATTRIBUTES if getattr(ref, a) != getattr(tgt, a)}
        assert 1 <= len(changed) <= 2
        claimed = set()
        for caption in record["captions"]:
            claims = decode_fashioniq(caption)
            assert claims or caption == "", caption
            for attribute, value in claims.items():
                assert claim_holds(attribute, value, ref, tgt), (caption, ref, tgt)
            claimed |= set(claims)
        assert claimed == changed, (record, ref, tgt)


@pytest.mark.parametrize("split", ["val", "test"])
def test_fashioniq_eval_galleries_hold_every_garment_in_three_or_four_photos_with_look_alikes(toy_spec, split):
    """What notebook 05 says of the toy galleries: larger than the garments, so a target has twins."""
    for category in schema.FASHIONIQ_CATEGORIES:
        part = toy_spec.fashioniq[(category, split)]
        garments = [image.garment for image in part.images]
        photos = Counter(garments)
        assert len(photos) == len(toy_fashioniq.all_garments(category))
        assert set(photos.values()) == {3, 4}, (category, split)
        one_away = [sum(len(g.changed(o)) == 1 for o in garments) for g in garments]
        assert np.median(one_away) >= 8  # the target is one of many near-duplicates


# ---------------------------------------------------------------- FashionIQ pictures show the garments


def garment_pixels(garment: toy_fashioniq.Garment, look: toy_fashioniq.GarmentLook) -> tuple[np.ndarray, int]:
    pixels = np.asarray(toy_fashioniq.render(garment, look))
    background = toy_fashioniq.BACKGROUNDS[look.background]
    return pixels, int((pixels != background).any(-1).sum())


LOOK = toy_fashioniq.GarmentLook(80, 112, 0.9, 0.0, 6, 0, 0)


@pytest.mark.parametrize("category", schema.FASHIONIQ_CATEGORIES)
def test_fashioniq_images_show_each_attribute(category):
    base = toy_fashioniq.Garment(category, "blue", "solid", "short", toy_fashioniq.DETAILS[category][0])
    areas = [garment_pixels(replace(base, sleeves=s), LOOK)[1] for s in SLEEVE_ORDER]
    assert areas[0] < areas[1] < areas[2]  # longer sleeves cover more
    pixels, _ = garment_pixels(base, LOOK)
    trim = toy_fashioniq.contrast("blue")
    colors, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    by_count = [tuple(c) for c in colors[np.argsort(-counts)]]
    assert by_count[1] == toy_fashioniq.GARMENT_COLORS["blue"]  # after the background
    trim_share = {}
    for pattern in toy_fashioniq.PATTERNS:
        pixels, area = garment_pixels(replace(base, pattern=pattern), LOOK)
        trim_share[pattern] = (pixels == trim).all(-1).sum() / area
    solid = trim_share.pop("solid")
    assert all(share > solid + 0.1 for share in trim_share.values())
    first, second = toy_fashioniq.DETAILS[category]
    (p1, a1), (p2, a2) = garment_pixels(base, LOOK), garment_pixels(replace(base, detail=second), LOOK)
    assert not np.array_equal(p1, p2)
    if category == "dress":
        assert a2 > a1  # long is longer than short
    elif category == "toptee":
        assert a2 < a1  # a v-neck cuts deeper than a round neck
    else:
        assert (p2 == trim).all(-1).sum() > (p1 == trim).all(-1).sum()  # the pocket is drawn in trim
