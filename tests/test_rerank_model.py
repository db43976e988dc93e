"""The SPRC² re-ranker: its loss, what its cross-attention sees, its negative mining, its weights' formats."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sprc_lib.errors import CheckpointError
from sprc_lib.model.config import tiny_config
from sprc_lib.model.lavis import read_checkpoint, save_lavis_checkpoint
from sprc_lib.model.loading import load_model, load_reranker
from sprc_lib.model.rerank import RerankerModel, hard_negatives, reranker_preset
from sprc_lib.model.sprc import SPRCModel
from sprc_lib.training.recipes import TOY
from sprc_lib.training.step import StepSettings

VOCAB = 60
B, T, WIDTH, L = 4, 65, 64, 7  # the tiny preset: 64 px images in 8 px patches + [CLS], ViT width 64


@pytest.fixture(scope="module")
def model() -> RerankerModel:
    torch.manual_seed(0)
    reranker = RerankerModel(reranker_preset("tiny", VOCAB)).eval()
    reranker.start_miner()
    return reranker


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[0, 5:] = 0  # one caption padded
    return {"reference": torch.randn(B, T, WIDTH, generator=g), "target": torch.randn(B, T, WIDTH, generator=g),
            "input_ids": torch.randint(5, VOCAB, (B, L), generator=g), "attention_mask": mask}


def test_forward_is_the_itm_loss_of_the_authors_three_b_examples(model):
    batch = _batch()
    torch.manual_seed(7)
    result = model.training_loss(batch, StepSettings.of(TOY["CIRR"]))
    loss = result.parts["loss_itm"]
    assert result.loss is loss  # the ITM loss alone, unweighted

    # By hand: the miner's scores, the same draws, the 3B examples laid out, one Q-Former pass, the ITM head.
    ref, tgt = model.encode_image(batch["reference"]), model.encode_image(batch["target"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        miner_queries = model.miner.embeddings(query_embeds=model.miner.query_tokens.expand(B, -1, -1))
        t_feats = F.normalize(model.miner.vision_projection(
            model.miner.qformer(query_embeds=miner_queries, encoder_hidden_states=tgt).last_hidden_state), dim=-1)
        text = model.miner.qformer(query_embeds=model.miner.embeddings(input_ids=ids), query_length=0,
                                   attention_mask=mask).last_hidden_state[:, 0]
        text = F.normalize(model.miner.text_projection(text), dim=-1)
        s = torch.stack([torch.stack([(t_feats[j] @ text[i]).max() for j in range(B)]) for i in range(B)]) / model.temp
    torch.manual_seed(7)
    neg_t, neg_q = hard_negatives(s)
    refs = torch.cat([ref, ref, ref[neg_q]])
    cands = torch.cat([tgt, tgt[neg_t], tgt])
    all_ids, all_mask = torch.cat([ids, ids, ids[neg_q]]), torch.cat([mask, mask, mask[neg_q]])
    q = model.config.num_query_tokens
    queries = model.query_tokens.expand(3 * B, -1, -1)
    out = model.qformer(query_embeds=model.embeddings(input_ids=all_ids, query_embeds=queries), query_length=q,
                        attention_mask=torch.cat([torch.ones(3 * B, q, dtype=torch.long), all_mask], 1),
                        encoder_hidden_states=torch.cat([refs, cands], 1)).last_hidden_state[:, :q]
    logits = model.itm_head(out).mean(1)
    labels = [1] * B + [0] * (2 * B)
    by_hand = -torch.stack([F.log_softmax(logits[i], -1)[y] for i, y in enumerate(labels)]).mean()
    assert torch.allclose(loss, by_hand, atol=1e-6)
    assert (neg_t != torch.arange(B)).all() and (neg_q != torch.arange(B)).all()


def test_the_score_sees_both_images_and_the_caption(model):
    batch = _batch()
    ref, tgt = model.encode_image(batch["reference"]), model.encode_image(batch["target"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        base = model.match_scores(ref, tgt, ids, mask)
        other_reference = model.match_scores(ref.roll(1, 0), tgt, ids, mask)
        other_candidate = model.match_scores(ref, tgt.roll(1, 0), ids, mask)
        other_caption = model.match_scores(ref, tgt, ids.roll(1, 0), mask.roll(1, 0))
    for changed in (other_reference, other_candidate, other_caption):
        assert ((changed - base).abs() > 1e-6).all()
    assert ((base > 0) & (base < 1)).all()


def test_mining_never_draws_the_positive_and_follows_the_softmax():
    scores = torch.tensor([[5.0, 1.0, 0.0, 2.0], [0.5, 3.0, 0.5, -1.0], [1.0, 1.0, 9.0, 1.0], [0.0, 2.0, 1.0, 4.0]])
    g = torch.Generator().manual_seed(0)
    draws = 4000
    targets = torch.zeros(4, 4)
    queries = torch.zeros(4, 4)
    for _ in range(draws):
        t, q = hard_negatives(scores, g)
        targets[torch.arange(4), t] += 1
        queries[torch.arange(4), q] += 1
    off = scores.clone().fill_diagonal_(float("-inf"))
    assert targets.diagonal().sum() == 0 and queries.diagonal().sum() == 0
    # Four standard errors of a proportion at n = 4000 are at most 0.032.
    assert torch.allclose(targets / draws, F.softmax(off, 1), atol=0.032)
    assert torch.allclose(queries / draws, F.softmax(off.t(), 1), atol=0.032)
    with pytest.raises(ValueError, match="at least 2"):
        hard_negatives(scores[:1, :1])


def test_only_what_the_itm_loss_reaches_is_trained(model):
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("miner.", "vision_model.encoder", "vision_model.embeddings", "vision_projection",
                                 "text_projection")) for n in trainable)
    assert "temp" not in trainable
    assert {"query_tokens", "itm_head.weight", "vision_model.post_layernorm.weight"} <= trainable
    copy = RerankerModel(model.config)
    copy.load_state_dict(model.state_dict())
    copy.train()
    copy.training_loss(_batch(), StepSettings.of(TOY["CIRR"])).loss.backward()
    assert all(p.grad is not None for n, p in copy.named_parameters() if p.requires_grad), "DDP needs every one"


def test_the_authors_key_layout_round_trips(model, tmp_path):
    path = save_lavis_checkpoint(model, tmp_path / "rerank.pt")
    keys = set(read_checkpoint(path)["Blip2QformerCirRerank"])
    assert {"query_tokens_f", "vision_proj_f.weight", "text_proj_f.bias", "itm_head.weight"} <= keys
    assert any(k.startswith("Fformer.bert.encoder.layer.0.") for k in keys) and "prompt_tokens" not in keys
    loaded = load_model(path, reranker_preset("tiny", VOCAB))
    assert isinstance(loaded, RerankerModel)
    for name, tensor in model.state_dict().items():
        got = loaded.state_dict()[name]
        assert torch.equal(got, tensor) or torch.equal(got, tensor.half().float()), name  # the file's fp16 ViT

    saved = read_checkpoint(path)
    saved["Blip2QformerCirRerank"]["Fformer.bert.pooler.dense.weight"] = torch.zeros(2, 2)
    torch.save(saved, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="Fformer.bert.pooler.dense.weight"):
        load_model(tmp_path / "odd.pt", reranker_preset("tiny", VOCAB))


def test_save_pretrained_round_trip_and_a_start_from_blip2(model, tmp_path):
    model.save_pretrained(tmp_path / "reranker")
    loaded = load_reranker(tmp_path / "reranker")
    assert isinstance(loaded, RerankerModel) and not loaded.miner.query_tokens.requires_grad
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())

    torch.manual_seed(3)
    sprc = SPRCModel(tiny_config(VOCAB))
    sprc.save_pretrained(tmp_path / "sprc")
    started = load_reranker(tmp_path / "sprc")
    assert torch.equal(started.itm_head.weight, sprc.itm_head.weight)  # BLIP-2's ITM head is the starting point
    assert torch.equal(started.miner.query_tokens, sprc.query_tokens)
    assert torch.equal(started.miner.qformer.encoder.layer[0].attention.attention.query.weight,
                       sprc.qformer.encoder.layer[0].attention.attention.query.weight)


def test_the_two_images_are_one_set_of_keys_so_swapping_them_changes_nothing(model):
    """The cross-attention's keys are the two images' tokens side by side, with no marker of which image a
    token came from, and attention is blind to the order of its keys: the score is symmetric in the two."""
    batch = _batch(seed=4)
    ref, tgt = model.encode_image(batch["reference"]), model.encode_image(batch["target"])
    with torch.no_grad():
        forward = model.match_scores(ref, tgt, batch["input_ids"], batch["attention_mask"])
        swapped = model.match_scores(tgt, ref, batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(forward, swapped, atol=1e-6)
