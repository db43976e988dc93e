"""A model loaded from safetensors holds its weights memory-mapped: a tensor costs RAM only once read. Loading
checks every tensor for NaN, and the feature cache hashes the frozen ViT to key its tokens; both read the
files through mappings of their own, closed after each read, so the model's own ViT pages stay unread. At
ViT-g's size that keeps 4 GB out of RAM in every run the feature cache serves (`make rehearse` measures it).
These tests check which copy each reader touches, and that a fingerprint read from the file is the model's
own, even after the ViT changes in memory."""

from __future__ import annotations

import pytest
import torch

from sprc_lib.errors import CheckpointError
from sprc_lib.features import backbone_fingerprint
from sprc_lib.model.loading import load_model


def model_fingerprint(model) -> str:
    """The fingerprint from the model's own tensors (its file forgotten)."""
    model._vit_source = None
    return backbone_fingerprint(model)


@pytest.fixture(params=["blip2", "sprc-folder"])
def source(request, tiny_blip2, tmp_path):
    """A BLIP-2 folder, and an SPRC saved with save_pretrained: the two folders a run starts from."""
    if request.param == "blip2":
        return tiny_blip2
    load_model(tiny_blip2).save_pretrained(tmp_path / "sprc")
    return tmp_path / "sprc"


def test_loading_and_fingerprinting_never_read_the_models_own_vit(source, monkeypatch):
    read = []  # the storages of every tensor torch.isfinite and the fingerprint read
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: read.append(t.data_ptr()) or isfinite(t))
    model = load_model(source)
    vit = {p.data_ptr() for p in model.vit_parameters()}
    assert read and not vit & set(read)  # every tensor was checked, none through the model's copy

    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: read.append(t.data_ptr()) or to(t, *a, **k))
    read.clear()
    fingerprint = backbone_fingerprint(model)
    assert len(read) >= len(vit) and not vit & set(read)
    monkeypatch.undo()
    assert fingerprint == model_fingerprint(model)  # the same key as hashing the model's tensors


def test_a_vit_changed_in_memory_is_fingerprinted_from_memory(tiny_blip2):
    model = load_model(tiny_blip2)
    before = backbone_fingerprint(model)
    with torch.no_grad():
        model.vision_model.encoder.layers[0].mlp.fc1.weight.add_(1e-3)  # in place: the file no longer holds it
    after = backbone_fingerprint(model)
    assert after != before and after == model_fingerprint(model)

    moved = load_model(tiny_blip2)
    moved.vision_model.to(torch.float64)  # new storages: read from the model
    assert backbone_fingerprint(moved) == model_fingerprint(moved)


def test_a_nan_in_the_file_is_still_refused(tiny_blip2, tmp_path):
    model = load_model(tiny_blip2)
    with torch.no_grad():
        model.vision_model.encoder.layers[0].mlp.fc1.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "damaged")
    with pytest.raises(CheckpointError, match="fc1.weight holds 1 NaN"):
        load_model(tmp_path / "damaged")


def test_a_reranker_started_from_blip2_fingerprints_its_vit_from_the_file(tiny_blip2, monkeypatch):
    from sprc_lib.model.loading import load_reranker

    reranker = load_reranker(tiny_blip2)
    vit = {p.data_ptr() for p in reranker.vit_parameters()}
    read = []
    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: read.append(t.data_ptr()) or to(t, *a, **k))
    fingerprint = backbone_fingerprint(reranker)
    assert read and not vit & set(read)
    monkeypatch.undo()
    assert fingerprint == model_fingerprint(reranker)


def test_sharing_a_vit_compares_it_without_reading_the_owners_copy(tiny_blip2, tmp_path, monkeypatch):
    owner = load_model(tiny_blip2)
    load_model(tiny_blip2).save_pretrained(tmp_path / "second")
    vit = {p.data_ptr() for p in owner.vit_parameters()}
    compared = []
    equal = torch.equal
    monkeypatch.setattr(torch, "equal", lambda a, b: compared.extend([a.data_ptr(), b.data_ptr()]) or equal(a, b))
    second = load_model(tmp_path / "second", vit_from=owner)
    assert second.shares_vit_with(owner) and compared and not vit & set(compared)
