"""SPRC's own behaviour (what stock LAVIS cannot show), checked against hand-built expectations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import Blip2Config, Blip2ForImageTextRetrieval

from sprc_lib.model import LOSS_NAMES, SPRCModel, blip2_vitg_config, tiny_config
from sprc_lib.model.loading import load_model, new_model
from sprc_lib.model.synthetic import random_triplets

B, L = 6, 16


@pytest.fixture()
def model() -> SPRCModel:
    return new_model("tiny", vocab_size=60, seed=0)


@pytest.fixture()
def batch() -> dict[str, torch.Tensor]:
    return random_triplets(tiny_config(60), B, seed=1, length=L, lengths=[16, 12, 9, 7, 5, 3])


def manual_text_path(model: SPRCModel, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A Q-Former pass with no image written out by hand: self-attention then the *text* FFN in every layer."""
    hidden = model.qformer.layernorm(embeddings)
    additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for layer in model.qformer.encoder.layer:
        attn, _ = layer.attention.attention(hidden, attention_mask=additive)
        attn = layer.attention.output(attn, hidden)
        hidden = layer.output(layer.intermediate(attn), attn)
    return hidden


def full_mask(model: SPRCModel, mask: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.ones(mask.shape[0], model.config.num_query_tokens, dtype=mask.dtype), mask], 1)


def test_text_pass_routes_everything_through_the_text_ffn(model, batch):
    model.eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        prompt = model.fusion_pass(model.encode_image(batch["reference"]), ids, mask)
        ours = model.text_pass(prompt, ids, mask)
        words = model.embeddings.word_embeddings(ids) + model.embeddings.position_embeddings(
            torch.arange(ids.shape[1])
        )
        hidden = manual_text_path(model, torch.cat([prompt, words], 1), full_mask(model, mask))
        expected = F.normalize(model.text_projection(hidden[:, prompt.shape[1]]), dim=-1)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_no_image_passes_ignore_query_ffn_and_cross_attention(model, batch):
    """Scrambling the query FFNs and the cross-attention changes the fusion pass, not the no-image passes."""
    model.eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        embeds = model.encode_image(batch["reference"])
        prompt = model.fusion_pass(embeds, ids, mask)
        before = (model.text_pass(prompt, ids, mask), model.prompt_text_pass(ids, mask), model.text_features(ids, mask))
        for name, p in model.qformer.named_parameters():
            if "_query" in name or "crossattention" in name:
                p.add_(torch.randn_like(p))
        after = (model.text_pass(prompt, ids, mask), model.prompt_text_pass(ids, mask), model.text_features(ids, mask))
        assert not torch.allclose(model.fusion_pass(embeds, ids, mask), prompt)
    for b, a in zip(before, after, strict=True):
        assert torch.equal(b, a)


def test_prompt_embedding_puts_prompts_after_cls(model, batch):
    ids = batch["input_ids"]
    q = model.config.num_query_tokens
    with torch.no_grad():
        emb = model.prompt_embeddings(ids)
        pos = model.embeddings.position_embeddings.weight
        word = model.embeddings.word_embeddings
    assert emb.shape == (B, L + q, model.config.qformer_config.hidden_size)
    assert torch.allclose(emb[:, 0], word(ids[:, 0]) + pos[0])
    assert torch.allclose(emb[:, 1 : q + 1], model.prompt_tokens.expand(B, -1, -1) + pos[1 : q + 1])
    assert torch.allclose(emb[:, q + 1 :], word(ids[:, 1:]) + pos[q + 1 : q + L])


def test_prompt_text_pass_by_hand(model, batch):
    model.eval()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        hidden = manual_text_path(model, model.prompt_embeddings(ids), full_mask(model, mask))
        expected = F.normalize(model.text_projection(hidden[:, 0]), dim=-1)
        assert torch.allclose(model.prompt_text_pass(ids, mask), expected, atol=1e-5)


def test_losses_by_hand(model, batch):
    model.eval()  # no dropout, so two computations agree
    ids, mask = batch["input_ids"], batch["attention_mask"]
    losses = model.losses(model(batch))
    assert set(losses) == set(LOSS_NAMES)
    with torch.no_grad():
        ref = model.encode_image(batch["reference"])
        g = model.image_features(model.encode_image(batch["target"]))
        prompt = model.fusion_pass(ref, ids, mask)
        f = model.text_pass(prompt, ids, mask)
        h = model.prompt_text_pass(ids, mask)
        # the reference's broadcasting form: (B,1,1,D) @ (B,D,Q) -> (B,B,1,Q) -> max over Q
        s = torch.matmul(f[:, None, None, :], g.permute(0, 2, 1)).squeeze(2).max(-1).values
        s2 = torch.matmul(h[:, None, None, :], g.permute(0, 2, 1)).squeeze(2).max(-1).values
        labels = torch.arange(B)
        itc = F.cross_entropy(s / model.temp, labels)
        rtc = F.cross_entropy(s2 / model.temp, labels)
        align = ((prompt.mean(1) - model.prompt_tokens.mean(1)) ** 2).mean()
    assert torch.allclose(losses["loss_itc"], itc, atol=1e-6)
    assert torch.allclose(losses["loss_rtc"], rtc, atol=1e-6)
    assert torch.allclose(losses["loss_align"], align, atol=1e-7)
    assert torch.allclose(model.scores(f, g), s)


def test_loss_align_gives_no_gradient_to_prompt_tokens(model, batch):
    losses = model.losses(model(batch))
    losses["loss_align"].backward()
    assert model.prompt_tokens.grad is None or torch.count_nonzero(model.prompt_tokens.grad) == 0
    assert torch.count_nonzero(model.query_tokens.grad) > 0


def test_itc_at_init_is_close_to_log_batch(batch):
    for seed in range(3):
        fresh = new_model("tiny", vocab_size=60, seed=seed).eval()
        losses = fresh.losses(fresh(batch))
        for name in ("loss_itc", "loss_rtc"):
            assert math.isfinite(losses[name].item())
            assert abs(losses[name].item() - math.log(B)) < 0.25 * math.log(B), (name, losses[name].item())
        assert math.isfinite(losses["loss_align"].item())


def test_one_step_trains_everything_but_the_vit_and_itm_head(model, batch):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0)
    model.train()
    losses = model.losses(model(batch))
    sum(losses.values()).backward()
    opt.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        if name.startswith(("vision_model.embeddings.", "vision_model.encoder.")):
            assert not p.requires_grad and not changed, name
        elif name.startswith("itm_head."):
            assert p.grad is None and not changed, name
        else:
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0 and changed, name
    assert model.ln_vision.weight.requires_grad


def test_vit_stays_in_eval_mode(model):
    model.train()
    assert model.qformer.training
    assert not model.vision_model.encoder.training and not model.vision_model.embeddings.training


def test_scores_are_max_over_query_tokens():
    f = F.normalize(torch.randn(3, 8), dim=-1)
    g = F.normalize(torch.randn(5, 4, 8), dim=-1)
    expected = torch.tensor([[max(float(f[b] @ g[n, q]) for q in range(4)) for n in range(5)] for b in range(3)])
    assert torch.allclose(SPRCModel.scores(f, g), expected, atol=1e-6)


def test_cached_vit_tokens_give_the_same_losses(model, batch):
    model.eval()
    cached = {k: model.vit(batch[k]) if k in ("reference", "target") else v for k, v in batch.items()}
    a, b = model.losses(model(batch)), model.losses(model(cached))
    for name in LOSS_NAMES:
        assert torch.equal(a[name], b[name])


def test_blip2_retrieval_weights_load_by_name(tmp_path):
    """A small transformers BLIP-2 retrieval model saved and loaded back offline, as the real one would be."""
    torch.manual_seed(0)
    config = Blip2Config(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=32, patch_size=8, initializer_range=0.02,
        ),
        qformer_config=dict(
            vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            use_qformer_text_input=True, max_position_embeddings=64,
        ),
        num_query_tokens=4,
        image_text_hidden_size=16,
    )
    blip = Blip2ForImageTextRetrieval(config).eval()
    with torch.no_grad():
        for p in blip.parameters():
            p.add_(0.05 * torch.randn_like(p))
    blip.save_pretrained(tmp_path / "blip2")
    model = load_model(tmp_path / "blip2").eval()
    model.ln_vision.eps = blip.vision_model.post_layernorm.eps  # HF's port uses the ViT's eps; SPRC uses 1e-5
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.randint(3, 50, (2, 8))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = blip(pixel_values=pixels, input_ids=ids, attention_mask=mask)
        image = model.image_features(model.encode_image(pixels))
        text = model.text_features(ids, mask)
    assert torch.allclose(out.image_embeds, image, atol=1e-5)
    assert torch.allclose(out.text_embeds, text, atol=1e-5)
    assert model.temp.item() == pytest.approx(0.07)
    assert model.prompt_tokens.std().item() == pytest.approx(0.02, rel=0.3)


def test_paper_preset_sizes():
    with torch.device("meta"):
        model = SPRCModel(blip2_vitg_config())
    counts = {
        "vit": sum(p.numel() for p in model.vit_parameters()),
        "all": sum(p.numel() for p in model.parameters()),
    }
    assert model.vision_model.embeddings.position_embedding.shape == (1, 257, 1408)
    assert len(model.vision_model.encoder.layers) == 39
    assert model.qformer.encoder.layer[0].has_cross_attention and not model.qformer.encoder.layer[1].has_cross_attention
    assert model.query_tokens.shape == model.prompt_tokens.shape == (1, 32, 768)
    assert model.embeddings.word_embeddings.weight.shape == (30523, 768)
    assert 0.98e9 < counts["vit"] < 1.0e9  # EVA ViT-g without its last block
    assert counts["all"] - counts["vit"] > 1.0e8
