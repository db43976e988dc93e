"""One optimisation step as the authors' code takes it, and the optimiser and schedule it steps.

The trainer and the benchmark both call `optimizer_step`, so the benchmark always measures the
step the trainer takes (its loss weights included).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from sprc_lib.env import autocast
from sprc_lib.model import SPRCModel
from sprc_lib.model.rerank import RerankerModel
from sprc_lib.training.recipes import Recipe


@dataclass(frozen=True)
class StepSettings:
    """How a step computes its loss: the recipe (its loss weights), the autocast dtype (None: full precision),
    negatives gathered from every process, and micro-batches (None: the whole batch at once)."""

    recipe: Recipe
    dtype: torch.dtype | None = None
    global_negatives: bool = False
    micro_batch: int | None = None


@dataclass
class Optimisation:
    """What a step updates: the optimiser, the grad scaler (on under fp16) and the schedule, if any."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None


def _model(net: nn.Module) -> SPRCModel | RerankerModel:
    return net.module if isinstance(net, DistributedDataParallel) else net


def make_optimizer(model: SPRCModel, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW over every trainable parameter, one group, as the authors' code (decay applies to all of them)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        trainable, lr=recipe.learning_rate, betas=recipe.betas, eps=recipe.eps, weight_decay=recipe.weight_decay
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    recipe: Recipe,
    steps_per_epoch: int,
    over_run: bool = False,
    start_step: int = 0,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycleLR stepped every batch, laid over the recipe's schedule epochs (CIRR: 80, a quirk of the authors').

    `start_step` > 0 builds it already `start_step` steps in (rate and momentum included), the way
    PyTorch resumes a schedule; the optimizer must then hold the schedule's group entries
    (`initial_lr`, `max_lr`, ...), as one restored from a checkpoint does.
    """
    epochs, pct_start = recipe.schedule(recipe.num_epochs, over_run)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=recipe.learning_rate,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=pct_start,
        div_factor=recipe.div_factor,
        last_epoch=start_step - 1,
    )


def optimizer_step(net: nn.Module, batch: dict[str, Tensor], optimisation: Optimisation, settings: StepSettings
                   ) -> dict[str, Tensor]:
    """Forward, the weighted loss, backward (grad scaler under fp16), optimiser and schedule step.

    `net` is the model or DDP around it; `batch` holds `reference`, `target` (pixels or cached ViT
    tokens), `input_ids` and `attention_mask` on the training device, and `sample` (the triplets' indices)
    with per-sample auxiliary prompts. With `settings.micro_batch` smaller than
    the batch, the backward is the gradient cache's (`cached_backward`): the same loss and gradients as
    the whole batch, with the memory of one micro-batch. Returns the detached loss terms and their
    weighted sum (`loss`).
    """
    net.train()
    device = batch["input_ids"].device
    inputs = tuple(batch[k] for k in ("reference", "target", "input_ids", "attention_mask"))
    o, micro_batch = optimisation, settings.micro_batch
    o.optimizer.zero_grad(set_to_none=True)
    if micro_batch and micro_batch < len(batch["input_ids"]):
        losses, loss = cached_backward(net, inputs, o.scaler, settings)
    else:
        with autocast(device, settings.dtype):
            per_sample = {"sample": batch["sample"]} if "sample" in batch else {}
            losses = net(*inputs, global_negatives=settings.global_negatives, **per_sample)
            loss = _model(net).objective(losses, settings.recipe)
        o.scaler.scale(loss).backward()
    o.scaler.step(o.optimizer)
    o.scaler.update()
    if o.scheduler is not None:
        o.scheduler.step()
    return {**{k: v.detach() for k, v in losses.items()}, "loss": loss.detach()}


def cached_backward(net: nn.Module, inputs: tuple[Tensor, ...], scaler: torch.amp.GradScaler, settings: StepSettings
                    ) -> tuple[dict[str, Tensor], Tensor]:
    """The whole batch's backward in micro-batches: the gradient cache (Gao et al. 2021).

    1. Every micro-batch's representations without a graph (the RNG state before each is kept).
    2. The whole batch's losses from them, and the gradients of the weighted loss with respect to
       each representation (and to `temp`, which only the losses use).
    3. Each micro-batch again, with a graph and its RNG state replayed (so the same dropout masks and
       the same representations), backpropagating its share of those gradients into the weights.
    In-batch negatives span the whole batch, as without micro-batches; only one micro-batch's
    activations are held at a time. Under DDP the gradients are averaged once, with the last one.
    From pixels, pass 1 keeps the frozen ViT's tokens (what a feature cache holds) and pass 3 reads them:
    the ViT runs once per image, not twice; it is frozen and deterministic, so pass 3 sees the very tokens
    it would have computed.
    """
    model, dtype = _model(net), settings.dtype
    device = inputs[2].device
    parts = [slice(i, i + settings.micro_batch) for i in range(0, len(inputs[2]), settings.micro_batch)]
    states, reps, images = [], [], []
    with torch.no_grad():
        for part in parts:
            states.append(_rng_state(device))
            with autocast(device, dtype):
                pair = tuple(model.vit(x[part]) if x.dim() == 4 else x[part] for x in inputs[:2])
                reps.append(model.representations(*pair, *(t[part] for t in inputs[2:])))
            images.append(pair)
    whole = {k: torch.cat([r[k] for r in reps]).detach().requires_grad_() for k in reps[0]}
    temp = model.temp.detach().clone().requires_grad_()
    with autocast(device, dtype):
        losses = model.losses(whole, settings.global_negatives, temp=temp)
        loss = model.objective(losses, settings.recipe)
    scaler.scale(loss).backward()  # gradients of the (scaled) loss w.r.t. the representations and temp
    for i, (part, state) in enumerate(zip(parts, states, strict=True)):
        _set_rng_state(state, device)
        last = i == len(parts) - 1
        sync = contextlib.nullcontext() if last or net is model else net.no_sync()
        with sync:
            with autocast(device, dtype):
                again = net(*images[i], *(t[part] for t in inputs[2:]), representations=True)
            outputs = [again[k] for k in whole] + ([model.temp] if last else [])
            grads = [whole[k].grad[part] for k in whole] + ([temp.grad] if last else [])
            torch.autograd.backward(outputs, grads)
    return losses, loss


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
