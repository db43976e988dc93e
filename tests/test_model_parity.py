"""The model computes what LAVIS computes: the fixture holds stock LAVIS outputs (see make_lavis_fixture.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Blip2QFormerConfig, Blip2VisionConfig

from sprc_lib.model import SPRCConfig, SPRCModel
from sprc_lib.model.lavis import (
    LAVIS_MODEL_KEY,
    CheckpointError,
    lavis_to_project,
    load_lavis_checkpoint,
    project_to_lavis,
    save_lavis_checkpoint,
)
from sprc_lib.model.loading import load_model

FIXTURE = Path(__file__).parent / "fixtures" / "lavis_tiny.pt"
TOL = 1e-5


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def fixture_config(c: dict) -> SPRCConfig:
    """The fixture's sizes as an SPRC config (the explicit-config path of the loader)."""
    return SPRCConfig(
        vision_config=Blip2VisionConfig(
            hidden_size=c["vision_width"],
            intermediate_size=c["vision_mlp_dim"],
            num_hidden_layers=c["vision_depth"],
            num_attention_heads=c["vision_heads"],
            image_size=c["image_size"],
            patch_size=c["patch_size"],
            layer_norm_eps=c["vision_layer_norm_eps"],
            initializer_range=0.02,
        ),
        qformer_config=Blip2QFormerConfig(
            vocab_size=c["qformer_vocab_size"],
            hidden_size=c["qformer_hidden"],
            num_hidden_layers=c["qformer_layers"],
            num_attention_heads=c["qformer_heads"],
            intermediate_size=c["qformer_intermediate"],
            max_position_embeddings=c["qformer_max_positions"],
            layer_norm_eps=c["qformer_layer_norm_eps"],
            cross_attention_frequency=c["cross_attention_freq"],
            use_qformer_text_input=True,
        ),
        num_query_tokens=c["num_query_tokens"],
        image_text_hidden_size=c["embed_dim"],
        ln_vision_eps=c["ln_vision_eps"],
    )


def write_checkpoint(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "sprc.pt"
    torch.save({"epoch": 3, LAVIS_MODEL_KEY: state}, path)
    return path


@pytest.fixture(scope="module")
def loaded(fixture, tmp_path_factory) -> SPRCModel:
    path = write_checkpoint(tmp_path_factory.mktemp("ckpt"), fixture["checkpoint"][LAVIS_MODEL_KEY])
    return load_lavis_checkpoint(path, fixture_config(fixture["config"])).eval()


def outputs_of(model: SPRCModel, inputs: dict) -> dict[str, torch.Tensor]:
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    q = model.config.num_query_tokens
    with torch.no_grad():
        vision = model.encode_image(inputs["images"])
        queries = model.query_tokens.expand(ids.shape[0], -1, -1)
        fusion = model.qformer(
            query_embeds=model.embeddings(input_ids=ids, query_embeds=queries),
            query_length=q,
            attention_mask=torch.cat([torch.ones(ids.shape[0], q, dtype=mask.dtype), mask], dim=1),
            encoder_hidden_states=vision,
        ).last_hidden_state
        text = model.qformer(
            query_embeds=model.embeddings(input_ids=ids), query_length=0, attention_mask=mask
        ).last_hidden_state
        return {
            "vision_features": vision,
            "index_hidden": model.image_hidden(vision),
            "index_features": model.image_features(vision),
            "text_hidden": text,
            "text_features": model.text_features(ids, mask),
            "fusion_hidden": fusion,
            "prompt": model.fusion_pass(vision, ids, mask),
        }


@pytest.mark.parametrize(
    "name", ["vision_features", "index_hidden", "index_features", "text_hidden", "text_features", "fusion_hidden"]
)
def test_matches_lavis(loaded, fixture, name):
    ours = outputs_of(loaded, fixture["inputs"])[name]
    theirs = fixture["outputs"][name]
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < TOL


def test_fusion_pass_is_the_query_part_of_the_fusion_output(loaded, fixture):
    out = outputs_of(loaded, fixture["inputs"])
    q = loaded.config.num_query_tokens
    assert torch.allclose(out["prompt"], fixture["outputs"]["fusion_hidden"][:, :q], atol=TOL)


def test_wrong_ln_vision_eps_would_be_caught(fixture, tmp_path):
    """The known pitfall: with the ViT's eps on `ln_vision` the vision features miss the tolerance."""
    config = fixture_config(fixture["config"])
    config.ln_vision_eps = fixture["config"]["vision_layer_norm_eps"]
    path = write_checkpoint(tmp_path, fixture["checkpoint"][LAVIS_MODEL_KEY])
    model = load_lavis_checkpoint(path, config).eval()
    with torch.no_grad():
        vision = model.encode_image(fixture["inputs"]["images"])
    assert (vision - fixture["outputs"]["vision_features"]).abs().max().item() > TOL


def test_keeps_authors_dtypes_and_drops_only_unused_keys(fixture):
    state = fixture["checkpoint"][LAVIS_MODEL_KEY]
    project, unknown = lavis_to_project(state)
    assert unknown == []
    dropped = set(state) - set(project_to_lavis(project))
    assert dropped == {k for k in state if k.startswith("Qformer.cls.") or k.endswith("position_ids")}


def test_bare_state_dict_loads_too(fixture, tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(fixture["checkpoint"][LAVIS_MODEL_KEY], path)
    model = load_model(path, fixture_config(fixture["config"])).eval()
    out = outputs_of(model, fixture["inputs"])
    assert (out["index_features"] - fixture["outputs"]["index_features"]).abs().max() < TOL


def test_round_trip_through_project_format(loaded, fixture, tmp_path):
    """Convert to safetensors + config.json, load back: identical outputs."""
    loaded.save_pretrained(tmp_path / "converted")
    assert (tmp_path / "converted" / "model.safetensors").exists()
    back = load_model(tmp_path / "converted").eval()
    assert back.ln_vision.eps == loaded.ln_vision.eps
    a, b = outputs_of(loaded, fixture["inputs"]), outputs_of(back, fixture["inputs"])
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_round_trip_through_lavis_format(loaded, fixture, tmp_path):
    path = save_lavis_checkpoint(loaded, tmp_path / "again.pt", epoch=5)
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 5
    state = saved[LAVIS_MODEL_KEY]
    original = fixture["checkpoint"][LAVIS_MODEL_KEY]
    for key, value in state.items():
        assert value.dtype == original[key].dtype, key
        assert torch.equal(value, original[key].to(value.dtype)), key
    back = load_lavis_checkpoint(path, fixture_config(fixture["config"])).eval()
    again, before = outputs_of(back, fixture["inputs"]), outputs_of(loaded, fixture["inputs"])
    assert torch.equal(again["fusion_hidden"], before["fusion_hidden"])


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("rename", "unexpected (1): Qformer.bert.encoder.layer.0.attention.selfie.query.weight"),
        ("drop", "missing (1): vision_model.encoder.layers.1.mlp.fc2.weight"),
        ("shape", "qformer.encoder.layer.2.crossattention.attention.key.weight: checkpoint (32, 40) vs model (32, 48)"),
        ("rename", "missing (1): qformer.encoder.layer.0.attention.attention.query.weight"),
        ("orphan", "visual_encoder.blocks.0.attn.q_bias (its partner is missing)"),
    ],
)
def test_checkpoint_problems_are_named(fixture, tmp_path, edit, expected):
    state = dict(fixture["checkpoint"][LAVIS_MODEL_KEY])
    if edit == "rename":
        state["Qformer.bert.encoder.layer.0.attention.selfie.query.weight"] = state.pop(
            "Qformer.bert.encoder.layer.0.attention.self.query.weight"
        )
    elif edit == "drop":
        del state["visual_encoder.blocks.1.mlp.fc2.weight"]
    elif edit == "shape":
        key = "Qformer.bert.encoder.layer.2.crossattention.self.key.weight"
        state[key] = state[key][:, :40]
    elif edit == "orphan":
        del state["visual_encoder.blocks.0.attn.v_bias"]
    with pytest.raises(CheckpointError) as err:
        load_lavis_checkpoint(write_checkpoint(tmp_path, state), fixture_config(fixture["config"]))
    assert expected in str(err.value)
    assert str(tmp_path / "sprc.pt") in str(err.value)


def test_wrong_preset_sizes_fail_with_shapes(fixture, tmp_path):
    config = fixture_config(fixture["config"])
    config.num_query_tokens = 4
    with pytest.raises(CheckpointError, match=r"query_tokens: checkpoint \(1, 8, 32\) vs model \(1, 4, 32\)"):
        load_lavis_checkpoint(write_checkpoint(tmp_path, fixture["checkpoint"][LAVIS_MODEL_KEY]), config)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    torch.save({"epoch": 1, "something": [1, 2]}, path)
    with pytest.raises(CheckpointError, match="expected a state dict"):
        load_model(path, SPRCConfig(qformer_config={"use_qformer_text_input": True}))
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_model(tmp_path / "absent.pt", SPRCConfig(qformer_config={"use_qformer_text_input": True}))
