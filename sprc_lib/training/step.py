"""One optimisation step as the authors' code takes it, and the optimiser and schedule it steps.

The trainer and the benchmark both call `optimizer_step`, so the benchmark always measures the
step the trainer takes (its loss weights included).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sprc_lib.env import autocast
from sprc_lib.model import SPRCModel, weighted_loss
from sprc_lib.training.recipes import Recipe


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


def optimizer_step(
    net: nn.Module,
    batch: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    recipe: Recipe,
    dtype: torch.dtype | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    global_negatives: bool = False,
) -> dict[str, Tensor]:
    """Forward, the weighted loss, backward (grad scaler under fp16), optimiser and schedule step.

    `net` is the model or DDP around it; `batch` holds `reference`, `target` (pixels or cached ViT
    tokens), `input_ids` and `attention_mask` on the training device. Returns the detached loss
    terms and their weighted sum (`loss`).
    """
    net.train()
    device = batch["input_ids"].device
    with autocast(device, dtype):
        losses = net(batch["reference"], batch["target"], batch["input_ids"], batch["attention_mask"],
                     global_negatives=global_negatives)
        loss = weighted_loss(losses, recipe.loss_rtc, recipe.loss_align)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()
    return {**{k: v.detach() for k, v in losses.items()}, "loss": loss.detach()}
