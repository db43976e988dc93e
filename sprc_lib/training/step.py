"""One optimisation step as the authors' code takes it, and the optimiser and schedule it steps.

The trainer and the benchmark both call `optimizer_step`, so the benchmark always measures the
step the trainer takes (its loss weights included). The loss is the model's own (`training_loss`):
the step knows no model by name.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from sprc_lib.env import autocast, autocast_dtype
from sprc_lib.model.blip2 import Batch, Blip2Retrieval, LossSettings, TrainingLoss
from sprc_lib.training.recipes import Recipe


class StepReads(LossSettings, Protocol):
    """What a step reads from the settings: what the model's loss reads, the precision (autocast's dtype on the
    batch's device) and micro-batches (None: the whole batch at once). A run's resolved settings
    (`training.config.resolve`) have them; `StepSettings` holds them for a step taken by hand."""

    precision: str
    micro_batch: int | None


@dataclass(frozen=True)
class StepSettings:
    """A step's settings outside a run (a notebook's step, the benchmark, the tests); see `StepReads`."""

    loss_rtc: float
    loss_align: float
    precision: str = "auto"
    global_negatives: bool = False
    micro_batch: int | None = None

    @classmethod
    def of(cls, recipe: Recipe, **rest: object) -> StepSettings:
        """A recipe's loss weights, and the rest as given."""
        return cls(recipe.loss_rtc, recipe.loss_align, **rest)


@dataclass
class Optimisation:
    """What a step updates: the optimiser, the grad scaler (on under fp16) and the schedule, if any."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None


def _model(net: nn.Module) -> Blip2Retrieval:
    return net.module if isinstance(net, DistributedDataParallel) else net


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.AdamW:
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


def optimizer_step(net: nn.Module, batch: Batch, optimisation: Optimisation, settings: StepReads
                   ) -> dict[str, Tensor]:
    """Forward, the model's training loss, backward (grad scaler under fp16), optimiser and schedule step.

    `net` is the model or DDP around it; `batch` holds `reference`, `target` (pixels or cached ViT
    tokens), `input_ids` and `attention_mask` on the training device, and `sample` (the triplets' indices)
    with per-sample auxiliary prompts. With `settings.micro_batch` smaller than
    the batch, the backward is the gradient cache's (`cached_backward`): the same loss and gradients as
    the whole batch, with the memory of one micro-batch. Returns the detached loss terms and their
    weighted sum (`loss`).
    """
    net.train()
    o, micro_batch = optimisation, settings.micro_batch
    o.optimizer.zero_grad(set_to_none=True)
    if micro_batch and micro_batch < len(batch["input_ids"]):
        result = cached_backward(net, batch, o.scaler, settings)
    else:
        device = batch["input_ids"].device
        with autocast(device, autocast_dtype(settings.precision, device)):
            result = _model(net).training_loss(batch, settings, forward=net)
        o.scaler.scale(result.loss).backward()
    o.scaler.step(o.optimizer)
    o.scaler.update()
    if o.scheduler is not None:
        o.scheduler.step()
    return {**{k: v.detach() for k, v in result.parts.items()}, "loss": result.loss.detach()}


def cached_backward(net: nn.Module, batch: Batch, scaler: torch.amp.GradScaler, settings: StepReads
                    ) -> TrainingLoss:
    """The whole batch's backward in micro-batches: the gradient cache (Gao et al. 2021), for SPRC, whose forward
    gives each triplet's representations and whose `batch_loss` turns a whole batch's into the loss.

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
    model, device = _model(net), batch["input_ids"].device
    dtype = autocast_dtype(settings.precision, device)
    parts = [slice(i, i + settings.micro_batch) for i in range(0, len(batch["input_ids"]), settings.micro_batch)]
    states, reps, pieces = [], [], []
    with torch.no_grad():
        for part in parts:
            states.append(_rng_state(device))
            with autocast(device, dtype):
                piece = {k: model.vit(v[part]) if k in ("reference", "target") and v.dim() == 4 else v[part]
                         for k, v in batch.items()}
                reps.append(model(piece))
            pieces.append(piece)
    whole = {k: torch.cat([r[k] for r in reps]).detach().requires_grad_() for k in reps[0]}
    temp = model.temp.detach().clone().requires_grad_()
    with autocast(device, dtype):
        result = model.batch_loss(whole, settings, temp=temp)
    scaler.scale(result.loss).backward()  # gradients of the (scaled) loss w.r.t. the representations and temp
    for i, (piece, part, state) in enumerate(zip(pieces, parts, states, strict=True)):
        _set_rng_state(state, device)
        last = i == len(parts) - 1
        sync = contextlib.nullcontext() if last or net is model else net.no_sync()
        with sync:
            with autocast(device, dtype):
                again = net(piece)
            outputs = [again[k] for k in whole] + ([model.temp] if last else [])
            grads = [whole[k].grad[part] for k in whole] + ([temp.grad] if last else [])
            torch.autograd.backward(outputs, grads)
    return result


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
