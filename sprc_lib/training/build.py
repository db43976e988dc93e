"""Everything a training run is made of, built from its config: model, data, optimiser, evaluation.

`build_run` is the set-up half of the trainer; `sprc_lib.training.trainer` holds the loop that uses it.
In a multi-process run (a process group is up, as `train` sets one up under torchrun) every process
builds its own parts: the same model (DDP copies rank 0's weights), its share of each batch, and one
run folder that rank 0 alone writes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from transformers.initialization import no_init_weights

from sprc_lib import distributed
from sprc_lib.data.cirr import CIRRDataset
from sprc_lib.data.fashioniq import FashionIQDataset
from sprc_lib.data.schema import FASHIONIQ_CATEGORIES
from sprc_lib.evaluation.context import EvalContext, evaluation_context
from sprc_lib.evaluation.protocols import validation_galleries
from sprc_lib.model import SPRCConfig, SPRCModel, preset_config
from sprc_lib.model.loading import BLIP2_RETRIEVAL, load_model
from sprc_lib.model.tokenizer import load_tokenizer
from sprc_lib.training import runs
from sprc_lib.training.config import TrainConfig
from sprc_lib.training.pretrain import TINY_BLIP2
from sprc_lib.training.recipes import Recipe
from sprc_lib.training.sampler import EpochBatchSampler
from sprc_lib.training.step import make_optimizer, make_scheduler


@dataclass
class RunParts:
    """The pieces of one run in one process."""

    config: TrainConfig
    recipe: Recipe
    run_dir: Path
    rank: int
    world_size: int
    model: SPRCModel
    net: SPRCModel | DistributedDataParallel  # what the training loss runs through
    evaluation: EvalContext  # model, tokenizer, transform, device, dtype, cache
    train_set: CIRRDataset | FashionIQDataset  # names and captions
    items: Dataset  # what the loader reads: the train set with pixels, or with cached ViT tokens
    sampler: EpochBatchSampler
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.OneCycleLR
    scaler: torch.amp.GradScaler

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def global_batch(self) -> int:
        return self.recipe.batch_size * self.world_size

    @property
    def device(self) -> torch.device:
        return self.evaluation.device


def base_weights(config: TrainConfig) -> str:
    """Where training starts: `--model-path`, else BLIP-2 (the paper) or the pretrained tiny BLIP-2."""
    if config.model_path:
        return config.model_path
    if config.preset != "tiny":
        return BLIP2_RETRIEVAL
    tiny = Path(config.data_path) / TINY_BLIP2
    if not (tiny / "config.json").is_file():
        raise FileNotFoundError(
            f"{tiny}: no pretrained tiny BLIP-2. The tiny track starts from one, as the paper starts from "
            f"BLIP-2: run `python -m sprc_lib pretrain-tiny --data-path {config.data_path}` (about a minute)."
        )
    return str(tiny)


def train_dataset(config: TrainConfig) -> CIRRDataset | FashionIQDataset:
    """The training triplets, names only (the loader's items add the images)."""
    if config.dataset == "CIRR":
        return CIRRDataset(config.data_path, "train", "relative")
    return FashionIQDataset(config.data_path, "train", FASHIONIQ_CATEGORIES, "relative", seed=config.seed)


def _tokenizer(config: TrainConfig, run_dir: Path, fresh: bool):
    """The run's tokenizer, saved in its folder by rank 0 when the run starts, read back by every process."""
    saved = run_dir / runs.TOKENIZER
    if fresh:
        if distributed.is_main():
            load_tokenizer(config.tokenizer or base_weights(config)).save_pretrained(saved)
        distributed.barrier()  # the others read what rank 0 wrote
    return load_tokenizer(saved)


def _model(config: TrainConfig, tokenizer, checkpoint: dict | None) -> SPRCModel:
    if checkpoint is not None:
        with no_init_weights():  # every tensor comes from the checkpoint
            model = SPRCModel(SPRCConfig(**checkpoint["model_config"]))
        model.load_state_dict(checkpoint["model"])
        return model
    return load_model(base_weights(config), preset_config(config.preset, len(tokenizer)))


def _wrap(model: SPRCModel, device: torch.device) -> SPRCModel | DistributedDataParallel:
    """The model, or DDP around it with several processes.

    DDP copies rank 0's weights to every process when built, then averages the gradients over the
    processes during `backward`. No buffer changes in training, so none is broadcast each step.
    """
    if distributed.world_size() == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def build_run(config: TrainConfig, run_dir: Path, checkpoint: dict | None = None) -> RunParts:
    """The parts of a run; a fresh one (no `checkpoint`) is seeded and writes its hyperparameters file.

    With a feature cache, rank 0 fills it (training and validation images) before the others open it,
    so no process writes the cache while another reads it.
    """
    rank, world_size = distributed.rank(), distributed.world_size()
    if rank != 0:  # one log for the run: rank 0's
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    run_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        runs.seed_everything(config.seed + rank)  # dropout masks differ between processes; weights come from rank 0
    recipe = config.recipe()
    device = distributed.process_device(config.device)
    tokenizer = _tokenizer(config, run_dir, fresh=checkpoint is None)
    model = _model(config, tokenizer, checkpoint)
    train_set = train_dataset(config)
    with distributed.main_first():
        evaluation = evaluation_context(
            model, tokenizer, device=device, precision=config.precision, transform=recipe.transform,
            target_ratio=recipe.target_ratio, feature_cache=config.feature_cache, num_workers=config.num_workers,
        )
        evaluation.warm(validation_galleries(config.dataset, config.data_path))
        items = evaluation.images(train_set)
    sampler = EpochBatchSampler(len(train_set), recipe.batch_size, config.seed, rank, world_size)
    optimizer = make_optimizer(model, recipe)
    parts = RunParts(
        config, recipe, run_dir, rank, world_size, model, _wrap(model, device), evaluation, train_set, items,
        sampler, optimizer, make_scheduler(optimizer, recipe, len(sampler), config.schedule_over_run),
        torch.amp.GradScaler(device.type, enabled=evaluation.dtype == torch.float16),
    )
    if checkpoint is None and parts.main:
        runs.write_hyperparameters(run_dir, hyperparameters(parts))
    return parts


def hyperparameters(run: RunParts) -> dict[str, Any]:
    """What the run's `training_hyperparameters.json` says about it."""
    recipe = run.recipe
    epochs, pct_start = recipe.schedule(recipe.num_epochs, run.config.schedule_over_run)
    return {
        "config": asdict(run.config),
        "recipe": recipe.to_dict(),
        "schedule": {"epochs": epochs, "pct_start": pct_start},
        "steps_per_epoch": len(run.sampler),
        "world_size": run.world_size,
        "global_batch_size": run.global_batch,
        "device": str(run.device),
        "autocast": str(run.evaluation.dtype),
        "trainable_parameters": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        "torch": torch.__version__,
    }
