"""The tiny BLIP-2's pretraining corpus: every absolute caption states its image's true attributes."""

from __future__ import annotations

import json
import re

from test_data_toy import COLOR, KIND, SIZE, decode_fashioniq

from sprc_lib.data.toy import PRETRAINING, pretraining_corpus


def decode_scene(caption: str) -> set[tuple[str, str, str, int, int]]:
    """(kind, colour, size, row, column) of each shape the caption names."""
    shapes = set()
    for part in re.split(r", | and (?=an? )", caption):
        words = part.split()
        (kind,) = [KIND[w] for w in words if w in KIND]
        (color,) = [COLOR[w] for w in words if w in COLOR]
        (size,) = [SIZE[w] for w in words if w in SIZE]
        where = words[words.index(next(w for w in words if w in KIND)) + 1 :]
        row = 0 if "top" in where else 2 if "bottom" in where else 1
        col = 0 if "left" in where else 2 if "right" in where else 1
        shapes.add((kind, color, size, row, col))
    return shapes


def test_corpus_file_lists_training_images_only(toy_root, toy_spec):
    corpus = json.loads((toy_root / PRETRAINING).read_text())
    assert corpus == pretraining_corpus(toy_spec)
    assert all((toy_root / pair["image"]).is_file() for pair in corpus)
    train_cirr = {f"cirr_dataset/{i.relpath.removeprefix('./')}" for i in toy_spec.cirr["train"].images}
    train_fiq = {
        f"fashionIQ_dataset/images/{i.name}.png"
        for (_, split), part in toy_spec.fashioniq.items() if split == "train" for i in part.images
    }
    assert {pair["image"] for pair in corpus} == train_cirr | train_fiq


def test_scene_captions_are_true(toy_spec):
    scenes = {f"cirr_dataset/{i.relpath.removeprefix('./')}": i.scene for i in toy_spec.cirr["train"].images}
    for pair in pretraining_corpus(toy_spec):
        if pair["image"] in scenes:
            truth = {(s.kind, s.color, s.size, s.row, s.col) for s in scenes[pair["image"]].shapes}
            assert decode_scene(pair["caption"]) == truth, pair


def test_garment_captions_are_true(toy_spec):
    garments = {
        f"fashionIQ_dataset/images/{i.name}.png": i.garment
        for (_, split), part in toy_spec.fashioniq.items() if split == "train" for i in part.images
    }
    nouns = {"dress": "dress", "shirt": "shirt", "button-down": "shirt", "top": "toptee", "tee": "toptee",
             "t-shirt": "toptee"}  # fmt: skip
    for pair in pretraining_corpus(toy_spec):
        garment = garments.get(pair["image"])
        if garment is None:
            continue
        text = pair["caption"]
        (category,) = {nouns[w] for w in text.split() if w in nouns}
        assert category == garment.category, pair
        claims = decode_fashioniq(text)
        if category == "dress":  # "a long black dress ...": the hem length leads
            claims["detail"] = text.split()[1]
        for attribute in ("color", "pattern", "sleeves", "detail"):
            assert claims[attribute] == getattr(garment, attribute), (attribute, pair)
