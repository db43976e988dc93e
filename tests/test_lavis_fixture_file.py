"""Structure of tests/fixtures/lavis_tiny.pt, the LAVIS ground truth that the parity tests read.

The file is made by tests/fixtures/make_lavis_fixture.py in a separate LAVIS environment; these
checks run in the project's environment without LAVIS, so a regenerated or damaged fixture
fails here, with a clear message, before it can confuse a parity test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

FIXTURE = Path(__file__).parent / "fixtures" / "lavis_tiny.pt"
MODEL_KEY = "Blip2QformerCirAlignPrompt"
# Modules that LAVIS's convert_weights_to_fp16 halves (Conv2d/Linear); the other ViT tensors stay fp32.
VIT_HALF_MODULES = ("patch_embed.proj", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def state_dict(fixture: dict[str, Any]) -> dict[str, torch.Tensor]:
    return fixture["checkpoint"][MODEL_KEY]


def expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every key of a released SPRC checkpoint with its shape, at the fixture's sizes."""
    dv, mlp, tokens = cfg["vision_width"], cfg["vision_mlp_dim"], cfg["vision_num_tokens"]
    h, inter, vocab = cfg["qformer_hidden"], cfg["qformer_intermediate"], cfg["qformer_vocab_size"]
    q, e, p = cfg["num_query_tokens"], cfg["embed_dim"], cfg["patch_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "query_tokens": (1, q, h),
        "prompt_tokens": (1, q, h),
        "temp": (),
        "visual_encoder.cls_token": (1, 1, dv),
        "visual_encoder.pos_embed": (1, tokens, dv),
        "visual_encoder.patch_embed.proj.weight": (dv, 3, p, p),
        "visual_encoder.patch_embed.proj.bias": (dv,),
        "ln_vision.weight": (dv,),
        "ln_vision.bias": (dv,),
        "Qformer.bert.embeddings.word_embeddings.weight": (vocab, h),
        "Qformer.bert.embeddings.position_embeddings.weight": (cfg["qformer_max_positions"], h),
        "Qformer.bert.embeddings.LayerNorm.weight": (h,),
        "Qformer.bert.embeddings.LayerNorm.bias": (h,),
        "Qformer.bert.embeddings.position_ids": (1, cfg["qformer_max_positions"]),
        "Qformer.cls.predictions.bias": (vocab,),
        "Qformer.cls.predictions.transform.dense.weight": (h, h),
        "Qformer.cls.predictions.transform.dense.bias": (h,),
        "Qformer.cls.predictions.transform.LayerNorm.weight": (h,),
        "Qformer.cls.predictions.transform.LayerNorm.bias": (h,),
        "Qformer.cls.predictions.decoder.weight": (vocab, h),
        "Qformer.cls.predictions.decoder.bias": (vocab,),
        "vision_proj.weight": (e, h),
        "vision_proj.bias": (e,),
        "text_proj.weight": (e, h),
        "text_proj.bias": (e,),
        "itm_head.weight": (2, h),
        "itm_head.bias": (2,),
    }
    for n in range(cfg["vision_depth"]):
        b = f"visual_encoder.blocks.{n}."
        shapes |= {b + f"{norm}.{s}": (dv,) for norm in ("norm1", "norm2") for s in ("weight", "bias")}
        shapes |= {b + "attn.qkv.weight": (3 * dv, dv), b + "attn.q_bias": (dv,), b + "attn.v_bias": (dv,)}
        shapes |= {b + "attn.proj.weight": (dv, dv), b + "attn.proj.bias": (dv,)}
        shapes |= {b + "mlp.fc1.weight": (mlp, dv), b + "mlp.fc1.bias": (mlp,)}
        shapes |= {b + "mlp.fc2.weight": (dv, mlp), b + "mlp.fc2.bias": (dv,)}
    for n in range(cfg["qformer_layers"]):
        layer = f"Qformer.bert.encoder.layer.{n}."
        attentions = {"attention": h}
        if n % cfg["cross_attention_freq"] == 0:
            attentions["crossattention"] = dv  # keys/values read the image tokens
        for att, kv_width in attentions.items():
            a = layer + att
            shapes |= {f"{a}.self.query.weight": (h, h), f"{a}.self.query.bias": (h,)}
            shapes |= {f"{a}.self.{kv}.weight": (h, kv_width) for kv in ("key", "value")}
            shapes |= {f"{a}.self.{kv}.bias": (h,) for kv in ("key", "value")}
            shapes |= {f"{a}.output.dense.weight": (h, h), f"{a}.output.dense.bias": (h,)}
            shapes |= {f"{a}.output.LayerNorm.{s}": (h,) for s in ("weight", "bias")}
        for suffix in ("", "_query"):
            shapes |= {f"{layer}intermediate{suffix}.dense.weight": (inter, h)}
            shapes |= {f"{layer}intermediate{suffix}.dense.bias": (inter,)}
            shapes |= {f"{layer}output{suffix}.dense.weight": (h, inter), f"{layer}output{suffix}.dense.bias": (h,)}
            shapes |= {f"{layer}output{suffix}.LayerNorm.{s}": (h,) for s in ("weight", "bias")}
    return shapes


def test_top_level_layout(fixture: dict[str, Any]) -> None:
    assert set(fixture) == {"checkpoint", "config", "inputs", "outputs", "notes", "versions"}
    assert set(fixture["checkpoint"]) == {"epoch", MODEL_KEY}
    assert fixture["checkpoint"]["epoch"] == 0
    assert all(isinstance(v, int | float | str) for v in fixture["config"].values())
    assert fixture["versions"]["salesforce-lavis"] == "1.0.2"
    assert fixture["versions"]["transformers"] == "4.26.1"
    assert set(fixture["notes"]) == set(fixture["outputs"])


def test_checkpoint_has_exactly_the_released_keys_and_shapes(
    fixture: dict[str, Any], state_dict: dict[str, torch.Tensor]
) -> None:
    expected = expected_shapes(fixture["config"])
    assert sorted(set(expected) - set(state_dict)) == [], "missing keys"
    assert sorted(set(state_dict) - set(expected)) == [], "unexpected keys"
    wrong = {k: tuple(t.shape) for k, t in state_dict.items() if tuple(t.shape) != expected[k]}
    assert wrong == {}, "shape mismatches"


def test_vit_dtypes_follow_lavis_fp16_conversion(state_dict: dict[str, torch.Tensor]) -> None:
    for key, tensor in state_dict.items():
        if key.endswith("position_ids"):
            assert tensor.dtype == torch.int64
            torch.testing.assert_close(tensor, torch.arange(tensor.shape[1]).unsqueeze(0))
        elif key.startswith("visual_encoder.") and any(f".{m}." in f".{key}" for m in VIT_HALF_MODULES):
            assert tensor.dtype == torch.float16, key
        else:
            assert tensor.dtype == torch.float32, key


def test_weights_carry_no_constant_init(state_dict: dict[str, torch.Tensor]) -> None:
    # LayerNorms init to 1/0 and biases (q_bias/v_bias too) to 0; the generator adds noise so a
    # converter that maps a key to the wrong place cannot match by accident.
    for key, tensor in state_dict.items():
        if tensor.is_floating_point():
            for constant in (0.0, 1.0):
                assert (tensor.float() - constant).abs().max() > 0.01, f"{key} is still {constant}"
    layer = "Qformer.bert.encoder.layer.1."
    assert not torch.equal(state_dict[layer + "output.dense.weight"], state_dict[layer + "output_query.dense.weight"])
    assert state_dict["temp"].item() > 0


def test_inputs(fixture: dict[str, Any]) -> None:
    cfg, inputs = fixture["config"], fixture["inputs"]
    batch, length, size = cfg["batch_size"], cfg["text_length"], cfg["image_size"]
    assert inputs["images"].shape == (batch, 3, size, size) and inputs["images"].dtype == torch.float32
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape == mask.shape == (batch, length) and ids.dtype == mask.dtype == torch.int64
    assert (ids[:, 0] == cfg["cls_token_id"]).all()
    assert ((ids == cfg["pad_token_id"]) == (mask == 0)).all()
    assert (mask == 0).any() and (mask.sum(1) == length).any(), "want padded and full-length captions"
    assert ids.max() < cfg["qformer_vocab_size"]


def test_output_shapes_and_values(fixture: dict[str, Any]) -> None:
    cfg, outputs = fixture["config"], fixture["outputs"]
    b, q, length = cfg["batch_size"], cfg["num_query_tokens"], cfg["text_length"]
    h, e = cfg["qformer_hidden"], cfg["embed_dim"]
    assert {name: tuple(t.shape) for name, t in outputs.items()} == {
        "vision_features": (b, cfg["vision_num_tokens"], cfg["vision_width"]),
        "index_hidden": (b, q, h),
        "index_features": (b, q, e),
        "text_hidden": (b, length, h),
        "text_features": (b, e),
        "fusion_hidden": (b, q + length, h),
    }
    for name, tensor in outputs.items():
        assert tensor.dtype == torch.float32, name
        assert torch.isfinite(tensor).all(), name
    for name in ("index_features", "text_features"):
        torch.testing.assert_close(outputs[name].norm(dim=-1), torch.ones(outputs[name].shape[:-1]))


def test_projected_features_follow_from_hidden_states(
    fixture: dict[str, Any], state_dict: dict[str, torch.Tensor]
) -> None:
    # The fixture's own arithmetic: the projections applied to the stored hidden states.
    outputs = fixture["outputs"]
    index = F.linear(outputs["index_hidden"], state_dict["vision_proj.weight"], state_dict["vision_proj.bias"])
    text = F.linear(outputs["text_hidden"][:, 0], state_dict["text_proj.weight"], state_dict["text_proj.bias"])
    torch.testing.assert_close(F.normalize(index, dim=-1), outputs["index_features"])
    torch.testing.assert_close(F.normalize(text, dim=-1), outputs["text_features"])
