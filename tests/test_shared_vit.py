"""Stage 1 and the SPRC² re-ranker, both started from one BLIP-2, hold one frozen ViT in memory, not two
(4 GB each at ViT-g's size): validate, cirr-submission, train-reranker and notebook 07 load the second
model with `vit_from`, which takes the first one's ViT after comparing it tensor by tensor with its own.
A model whose ViT differs keeps its own, and the command says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sprc_lib.evaluation.protocols as protocols
from sprc_lib.cli import main
from sprc_lib.model.lavis import save_lavis_checkpoint
from sprc_lib.model.loading import load_model, load_model_and_tokenizer
from sprc_lib.model.rerank import reranker_from_retrieval
from sprc_lib.model.tokenizer import load_tokenizer
from sprc_lib.training.build import build_run
from sprc_lib.training.config import TrainConfig, resolve


@pytest.fixture(scope="module")
def stage1(tiny_blip2, tmp_path_factory) -> Path:
    """An SPRC started from the tiny BLIP-2, its ViT in fp16 values as BLIP-2's is (the authors keep it in fp16,
    so a released file holds the same ViT)."""
    model = load_model(tiny_blip2)
    with torch.no_grad():
        for p in model.vit_parameters():
            p.copy_(p.half().float())
    out = tmp_path_factory.mktemp("stage1")
    model.save_pretrained(out)
    load_tokenizer(tiny_blip2).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def rerankers(stage1, tmp_path_factory) -> dict:
    """A re-ranker started from the same weights as `stage1` in each format a user passes (its ITM head moved
    so that it differs from theirs), and one whose ViT differs too."""
    out = tmp_path_factory.mktemp("rerankers")
    reranker = reranker_from_retrieval(load_model(stage1))
    with torch.no_grad():
        reranker.itm_head.weight.add_(0.5)
    reranker.save_pretrained(out / "folder")
    save_lavis_checkpoint(reranker, out / "released.pt")
    with torch.no_grad():
        reranker.vision_model.encoder.layers[0].mlp.fc1.weight.add_(1e-3)
    reranker.save_pretrained(out / "other-vit")
    return {"folder": out / "folder", "released": out / "released.pt", "other": out / "other-vit"}


def vit_bytes(*models) -> int:
    """The bytes of distinct ViT tensors the models hold between them."""
    seen = {p.data_ptr(): p.numel() * p.element_size() for m in models for p in m.vit_parameters()}
    return sum(seen.values())


@pytest.mark.parametrize("source", ["folder", "released"])
def test_a_reranker_beside_its_stage1_holds_no_vit_of_its_own(stage1, rerankers, source):
    first = load_model(stage1)
    alone, _ = load_model_and_tokenizer(rerankers[source], stage1, "tiny", "rerank_model")
    beside, _ = load_model_and_tokenizer(rerankers[source], stage1, "tiny", "rerank_model", vit_from=first)
    assert beside.shares_vit_with(first) and not alone.shares_vit_with(first)
    assert vit_bytes(first, beside) == vit_bytes(first) and vit_bytes(first, alone) == 2 * vit_bytes(first)
    # The same weights as loaded alone, every tensor.
    assert alone.state_dict().keys() == beside.state_dict().keys()
    for name, tensor in alone.state_dict().items():
        assert torch.equal(tensor, beside.state_dict()[name]), name


def test_a_reranker_with_another_vit_keeps_its_own(stage1, rerankers):
    first = load_model(stage1)
    other, _ = load_model_and_tokenizer(rerankers["other"], stage1, "tiny", "rerank_model", vit_from=first)
    assert not other.shares_vit_with(first)
    assert not torch.equal(other.vision_model.encoder.layers[0].mlp.fc1.weight,
                           first.vision_model.encoder.layers[0].mlp.fc1.weight)


@pytest.mark.parametrize(("source", "shared"), [("folder", True), ("other", False)])
def test_validation_with_a_reranker_keeps_one_vit(small_toy, stage1, rerankers, monkeypatch, capsys,
                                                  source, shared):
    seen = []
    stages = protocols.validation_stages

    def spy(ctx, dataset, root, reranker):
        seen.append((ctx.model.shares_vit_with(reranker.ctx.model), vit_bytes(ctx.model, reranker.ctx.model),
                     vit_bytes(ctx.model)))
        return stages(ctx, dataset, root, reranker)

    monkeypatch.setattr(protocols, "validation_stages", spy)
    assert main(["validate", "--dataset", "CIRR", "--data-path", str(small_toy), "--preset", "tiny",
                 "--model-path", str(stage1), "--rerank-model", str(rerankers[source]),
                 "--tokenizer", str(stage1), "--rerank-top-k", "2"]) == 0
    ((shares, both, one),) = seen
    assert shares is shared and both == (one if shared else 2 * one)
    assert ("differs from --model-path's, so both are kept in memory" in capsys.readouterr().out) is not shared


def test_a_reranker_run_validates_with_its_own_vit(small_toy, stage1, tmp_path):
    config = TrainConfig(dataset="CIRR", data_path=str(small_toy), preset="tiny", model_path=str(stage1),
                         stage1_model=str(stage1), reranker=True, num_workers=0, batch_size=16,
                         output_dir=str(tmp_path / "run"))
    run = build_run(resolve(config), tmp_path / "run")
    with run.stage1.loaded() as stage1:  # loaded for each validation, released after it
        assert stage1.model.shares_vit_with(run.model)
        assert vit_bytes(stage1.model, run.model) == vit_bytes(run.model)
