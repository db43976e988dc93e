"""The gradient cache: micro-batches give the whole batch's losses and gradients, with the same dropout masks."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from sprc_lib.model import LOSS_NAMES, SPRCModel, tiny_config
from sprc_lib.model.synthetic import random_triplets
from sprc_lib.paths import checkout
from sprc_lib.training.recipes import TOY
from sprc_lib.training.step import Optimisation, StepSettings, cached_backward, optimizer_step

VOCAB, BATCH = 60, 32
KEYS = ("reference", "target", "input_ids", "attention_mask")


def model(dropout: float) -> SPRCModel:
    config = tiny_config(VOCAB)
    config.qformer_config.hidden_dropout_prob = config.qformer_config.attention_probs_dropout_prob = dropout
    torch.manual_seed(0)
    return SPRCModel(config).train()


def batch() -> dict[str, torch.Tensor]:
    triplets = random_triplets(tiny_config(VOCAB), BATCH, seed=5, length=12)
    return {k: triplets[k] for k in KEYS}


def whole_batch(net: SPRCModel, inputs: dict) -> tuple[dict, dict]:
    recipe = TOY["CIRR"]
    net.zero_grad(set_to_none=True)
    losses = net.losses(net(inputs))
    loss = losses["loss_itc"] + recipe.loss_rtc * losses["loss_rtc"] + recipe.loss_align * losses["loss_align"]
    loss.backward()
    return {**losses, "loss": loss}, {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def micro_batched(net: SPRCModel, inputs: dict, size: int) -> tuple[dict, dict]:
    net.zero_grad(set_to_none=True)
    loss, losses = cached_backward(net, inputs, torch.amp.GradScaler("cpu", enabled=False),
                                   StepSettings.of(TOY["CIRR"], micro_batch=size))
    return {**losses, "loss": loss}, {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("size", [8, 5])  # 5: the last micro-batch is short
def test_micro_batches_give_the_whole_batchs_losses_and_gradients(size):
    inputs = batch()
    reference = model(dropout=0.0)
    (expected, expected_grads), (got, grads) = whole_batch(reference, inputs), micro_batched(
        copy.deepcopy(reference), inputs, size)
    for name in (*LOSS_NAMES, "loss"):
        assert got[name].item() == pytest.approx(expected[name].item(), abs=1e-6), name
    assert grads.keys() == expected_grads.keys() and "temp" in grads and "prompt_tokens" in grads
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=0, atol=1e-6, msg=name)


def test_from_pixels_the_vit_sees_each_image_once_per_step():
    """Pass 3 reads the tokens pass 1 kept; losses and gradients stay the whole batch's (the test above)."""
    inputs = batch()
    assert inputs["reference"].dim() == 4  # pixels
    net, seen = model(dropout=0.0), []
    net.vision_model.embeddings.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    micro_batched(net, inputs, 8)
    assert sum(seen) == 2 * BATCH and len(seen) == 2 * BATCH // 8  # reference and target, each micro-batch once
    seen.clear()
    whole_batch(net, inputs)
    assert sum(seen) == 2 * BATCH


def test_the_check_can_fail():
    """A micro-batch's own in-batch negatives (plain accumulation) are another loss: the comparison sees it."""
    inputs = batch()
    net = model(dropout=0.0)
    expected, _ = whole_batch(net, inputs)
    first = net.losses(net({k: t[:8] for k, t in inputs.items()}))
    assert abs(first["loss_itc"].item() - expected["loss_itc"].item()) > 1e-2


def test_the_graph_pass_replays_the_graph_free_pass_bit_for_bit_with_dropout_on():
    net = model(dropout=0.3)
    seen: list[dict] = []
    plain = net.representations

    def record(*args):
        reps = plain(*args)
        seen.append({k: v.detach().clone() for k, v in reps.items()})
        return reps

    net.representations = record
    settings = StepSettings.of(TOY["CIRR"], micro_batch=8)
    cached_backward(net, batch(), torch.amp.GradScaler("cpu", enabled=False), settings)
    free, graph = seen[:4], seen[4:]  # 4 graph-free passes, then 4 with a graph
    assert len(graph) == 4
    for a, b in zip(free, graph, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(free[0]["composed"], free[1]["composed"])  # dropout really drew masks


def test_an_optimiser_step_with_micro_batches_lands_on_the_same_weights():
    inputs = batch()
    nets = [model(dropout=0.0) for _ in range(2)]
    for net, size in zip(nets, (None, 8), strict=True):
        optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
        optimizer_step(net, inputs, Optimisation(optimizer, torch.amp.GradScaler("cpu", enabled=False)),
                       StepSettings.of(TOY["CIRR"], micro_batch=size))
    # Up to a tenth of one step (lr 1e-3): AdamW divides by the gradients' RMS, so where a gradient is ~0 in
    # theory (attention key biases) the 1e-9 differences of summation order grow into visible ones.
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=name)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_checkpointed_qformer_layers_give_the_same_gradients(dropout):
    inputs = batch()
    plain = model(dropout)
    checkpointed = copy.deepcopy(plain)
    checkpointed.checkpoint_qformer()
    torch.manual_seed(1)
    expected, expected_grads = whole_batch(plain, inputs)
    torch.manual_seed(1)
    got, grads = whole_batch(checkpointed, inputs)
    assert got["loss"].item() == pytest.approx(expected["loss"].item(), abs=1e-6)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=0, atol=1e-6, msg=name)


def test_the_planner_counts_what_autograd_saves_and_what_checkpointing_spares():
    from sprc_lib.training.memory import activation_cost, plan_memory

    config = tiny_config(VOCAB)
    fixed, per_triplet = activation_cost(config)
    _, checkpointed = activation_cost(config, checkpointing=True)
    assert per_triplet > 0 and checkpointed < per_triplet / 2  # a checkpointed layer keeps only its input
    cost = (fixed, per_triplet)
    whole, micro = plan_memory(config, 32, cost=cost), plan_memory(config, 32, 8, cost=cost)
    assert micro.activations == whole.activations - 24 * per_triplet and micro.gradient_cache > 0
    trainable = sum(p.numel() for p in SPRCModel(config).parameters() if p.requires_grad)
    assert whole.gradients == 4 * trainable and whole.optimizer == 8 * trainable


@pytest.mark.slow
def test_plan_at_the_papers_batch_names_the_gpus_it_fits(capsys):
    from sprc_lib.cli import main

    assert main(["plan", "--preset", "blip2-vitg", "--batch-size", "128", "--micro-batch", "32"]) == 0
    out = capsys.readouterr().out
    assert "batch 128, micro-batches of 32" in out and "MiB per triplet (measured)" in out
    # The paper's batch at once needs an A100; in micro-batches of 32 it fits the free Colab T4.
    assert re.search(r"T4 16 GB\s+does not fit\s+fits", out) and re.search(r"A100 40 GB\s+fits\s+fits", out)
    # The README quotes this plan: its figures are this output's.
    readme = " ".join((checkout() / "README.md").read_text().split())
    quoted = re.search(r"\((\S+) MiB per triplet .*? predicts (\S+) GiB for the paper's batch of 128 from pixels "
                       r".*? and (\S+) GiB in micro-batches of 32 .*? the largest micro-batch a T4 takes is (\d+)\)",
                       readme)
    assert quoted, "README: the plan's paragraph is not where this test looks"
    per_triplet = re.search(r"activations (\S+) MiB per triplet", out)[1]
    peaks = re.search(r"^peak\s+(\S+)\s+(\S+)", out, re.M).groups()
    t4 = re.search(r"^largest micro-batch on a T4.*?\s(\d+) / \d+ / \d+\s+(\d+) / ", out, re.M)[2]
    assert quoted.groups() == (per_triplet, *peaks, t4), "README: run `python -m sprc_lib plan --preset blip2-vitg " \
        "--batch-size 128 --micro-batch 32` and quote what it prints"
