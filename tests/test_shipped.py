"""The shipped tiny weights: they fit the toy data this version generates, a fresh home uses them instead of
training, and a home says when it holds a local retraining instead. (What a retraining gives is checked
against a measured band in test_retraining.py: weights trained on another CPU differ, so no test compares
weights trained here with the shipped ones.)"""

from __future__ import annotations

from safetensors.torch import load_file, save_file

from sprc_lib.course import shipped as shipping
from sprc_lib.course import toy_track
from sprc_lib.course.shipped import SHIPPED, STAMP, is_shipped, shipped
from sprc_lib.training.tiny_layout import TINY_BLIP2, model_folder, model_names

NAMES = model_names()


def test_the_tiny_track_keeps_its_models_where_its_layout_says(tmp_path):
    """The layout the docs, the notebooks' environment and the shipped folders rely on."""
    assert {name: model_folder(name, tmp_path).relative_to(tmp_path).as_posix() for name in NAMES} == {
        TINY_BLIP2: "tiny-blip2", "CIRR": "runs/CIRR/best", "FashionIQ": "runs/FashionIQ/best",
        "CIRR-reranker": "runs/CIRR-reranker/best", "FashionIQ-reranker": "runs/FashionIQ-reranker/best"}


def test_the_shipped_weights_fit_the_toy_data_this_version_generates(toy_root):
    for name in NAMES:
        assert shipped(name, toy_root) is not None, f"{SHIPPED / name} was trained on other toy data: make tiny-weights"


def test_other_toy_data_gets_no_shipped_weights(toy_copy):
    caption_file = next((toy_copy / "cirr_dataset").rglob("cap.rc2.train.json"))
    caption_file.write_text(caption_file.read_text().replace("a", "b", 1))
    assert shipped("CIRR", toy_copy) is None


def test_a_fresh_home_copies_the_shipped_weights_and_trains_nothing(toy_copy, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained, although the shipped weights fit")

    monkeypatch.setattr(toy_track, "pretrain_tiny_blip2", no_training)
    monkeypatch.setattr(toy_track, "train", no_training)
    assert toy_track.ensure_models(toy_copy) == []  # every model in place, none of them a local retraining
    model, tokenizer = toy_track.tiny_model("CIRR", toy_copy)
    assert (toy_copy / TINY_BLIP2 / "config.json").is_file() and not (toy_copy / TINY_BLIP2 / STAMP).exists()
    assert model.config.num_query_tokens > 0 and len(tokenizer) > 0
    for name in toy_track.model_names():
        assert is_shipped(name, toy_track.model_folder(name, toy_copy)), name


def test_a_home_with_other_weights_says_it_holds_a_local_retraining(toy_copy):
    toy_track.ensure_models(toy_copy)
    weights = toy_track.model_folder("CIRR", toy_copy) / "model.safetensors"
    tensors = load_file(weights)
    tensors["prompt_tokens"] = tensors["prompt_tokens"] + 1e-3
    save_file(tensors, weights)
    assert toy_track.ensure_models(toy_copy) == ["CIRR"]


def test_a_stopped_copy_is_redone(toy_copy, monkeypatch):
    dest = toy_copy / "runs" / "CIRR" / "best"
    dest.mkdir(parents=True)
    (dest / "model.safetensors").write_bytes(b"half a file")
    assert shipping.copy_shipped("CIRR", toy_copy, dest)
    assert (dest / "model.safetensors").read_bytes() == (SHIPPED / "CIRR" / "model.safetensors").read_bytes()
