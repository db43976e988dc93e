"""Training SPRC with the reference recipe, in a loop you can read top to bottom, resumable to the step.

A run folder holds everything about one run:

    training_hyperparameters.json   the config and the resolved recipe
    train_metrics.csv               one row per epoch: mean losses, learning rate, throughput
    validation_metrics.csv          one row per validation
    tokenizer/                      the tokenizer the run uses
    checkpoint.pt                   model, optimiser, scheduler, scaler, RNG states and position
    best/  final/                   saved models (`save_pretrained` + tokenizer), with --save-training

Resuming restores the checkpoint exactly, so an interrupted run ends with the weights an
uninterrupted one would have: the batch order comes from (seed, epoch), not from a global RNG.

Several processes (`torchrun --nproc_per_node N -m sprc_lib train ...`) train one model with
DistributedDataParallel: each step takes one global batch of `batch_size x N` triplets, each process
its slice; rank 0 alone writes files, logs and shows progress. The checkpoint counts the *samples*
consumed in the epoch, so a run can resume with another number of processes (see `Trainer._restore`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import transformers
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm
from transformers.initialization import no_init_weights

from sprc_lib import distributed
from sprc_lib.data import CIRRDataset, FashionIQDataset, build_transform, collate
from sprc_lib.env import autocast, autocast_dtype
from sprc_lib.evaluate import FIQ_CATEGORIES, validate, validation_galleries
from sprc_lib.features import CachedImages, FeatureCache
from sprc_lib.metrics import KEEP_BEST_KEY
from sprc_lib.model import LOSS_NAMES, SPRCConfig, SPRCModel, preset_config
from sprc_lib.model.lavis import read_checkpoint
from sprc_lib.model.loading import BLIP2_RETRIEVAL, load_model
from sprc_lib.model.tokenizer import load_tokenizer, tokenize
from sprc_lib.paths import repo_root
from sprc_lib.pretrain import TINY_BLIP2
from sprc_lib.recipes import Recipe, recipe_for

CHECKPOINT = "checkpoint.pt"
HYPERPARAMETERS = "training_hyperparameters.json"


@dataclass
class TrainConfig:
    """What a run needs besides the recipe; recipe fields left as None take the recipe's default."""

    dataset: str = "CIRR"
    data_path: str = "data/toy"
    preset: str = "tiny"
    model_path: str | None = None  # initial weights; default: BLIP-2 (paper) or <data_path>/tiny-blip2 (tiny)
    tokenizer: str | None = None
    output_dir: str | None = None  # default: runs/<dataset>_<preset>_<time>
    num_epochs: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    loss_rtc: float | None = None
    loss_align: float | None = None
    validation_frequency: int | None = None
    transform: str | None = None
    target_ratio: float | None = None
    schedule_over_run: bool = False
    num_workers: int = 2
    save_training: bool = False
    save_best: bool = False
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    feature_cache: str | None = None
    checkpoint_every: int = 0  # also save a checkpoint every N steps (0: at epoch ends only)
    stop_after_steps: int | None = None  # stop (with a checkpoint) after N steps of this invocation
    global_negatives: bool = False  # several processes: contrast each query with the targets of all of them

    def recipe(self) -> Recipe:
        return recipe_for(self.dataset, self.preset).with_overrides(
            num_epochs=self.num_epochs,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            loss_rtc=self.loss_rtc,
            loss_align=self.loss_align,
            validation_frequency=self.validation_frequency,
            transform=self.transform,
            target_ratio=self.target_ratio,
        )


@dataclass
class TrainResult:
    run_dir: Path
    model: SPRCModel
    tokenizer: object
    train_history: list[dict] = field(default_factory=list)
    val_history: list[dict] = field(default_factory=list)
    best: dict | None = None
    finished: bool = True


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose order depends only on (seed, epoch): reproducible, resumable, shardable.

    Each step takes one global batch of `batch_size * world_size` indices; rank r gets its slice.
    `drop_last` as the reference: an incomplete final batch is skipped.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if size < batch_size * world_size:
            raise ValueError(f"{size} training triplets cannot fill one batch of {batch_size} x {world_size}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start, self.offset = 0, 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0, offset: int = 0) -> None:
        """Iterate `epoch` from batch `start_batch`, the batches shifted by `offset` samples of the epoch's order.

        An offset arises when a run resumes with another world size after a number of samples that the
        new global batch does not divide: the epoch then goes on from the first unseen sample.
        """
        self.epoch, self.start, self.offset = epoch, start_batch, offset

    def __len__(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    @property
    def stop(self) -> int:
        """The batch index this epoch ends at: `len(self)`, or one less when an offset leaves no room."""
        return (self.size - self.offset) // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        step = self.batch_size * self.world_size
        for b in range(self.start, self.stop):
            chunk = order[self.offset + b * step : self.offset + (b + 1) * step]
            yield chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()


def make_optimizer(model: SPRCModel, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW over every trainable parameter, one group, as the reference (decay applies to all of them)."""
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
    """OneCycleLR stepped every batch, laid over the recipe's schedule epochs (CIRR: 80, a reference quirk).

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    """Every RNG the loop draws from, as tensors and plain data (so checkpoints load with weights_only).

    On a GPU, only the training device's generator: asking for all of them would open a context on
    every GPU from every process of a multi-GPU run.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_csv(rows: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) if k != "epoch" else int(v) for k, v in row.items()} for row in csv.DictReader(f)]


def save_model_dir(model: SPRCModel, tokenizer, path: Path, info: dict) -> None:
    """`save_pretrained` model + tokenizer into `path`, replacing an older copy only once the new one is whole."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "training_info.json").write_text(json.dumps(info, indent=2))
    old = path.with_name(path.name + ".old")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(resume: str | Path) -> Path:
    path = Path(resume)
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{resume}: no {CHECKPOINT} to resume from (pass the run folder or the file)")
    return path


class Trainer:
    """One training run; `fit()` runs it (or continues it, when built with `resume`).

    In a multi-process run (a process group is up, as `train` sets one up under torchrun) every process
    builds its own Trainer and all move in lock-step: the same steps, validations and checkpoints.
    """

    def __init__(self, config: TrainConfig, resume: str | Path | None = None, callback: Callable | None = None):
        checkpoint = read_checkpoint(find_checkpoint(resume)) if resume else None
        if checkpoint is not None:
            saved = checkpoint["config"]
            for name in ("data_path", "num_workers", "device", "feature_cache", "stop_after_steps", "checkpoint_every"):
                saved[name] = getattr(config, name)
            config = TrainConfig(**saved)
        self.config, self.callback = config, callback
        self.recipe = config.recipe()
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        if not self.main:  # one log for the run: rank 0's
            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
        self.global_batch = self.recipe.batch_size * self.world_size
        self.device = distributed.process_device(config.device)
        self.dtype = autocast_dtype(config.precision, self.device)
        fresh_dir = None if checkpoint else distributed.broadcast_object(str(self._new_run_dir()))  # rank 0's clock
        self.run_dir = Path(checkpoint["run_dir"] if checkpoint else fresh_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:
            seed_everything(config.seed + self.rank)  # dropout masks differ between processes; weights come from rank 0

        self.train_set = self._train_dataset(preprocess=None)
        self.tokenizer = self._tokenizer(checkpoint)
        self.model = self._model(checkpoint).to(self.device)
        if self.device.type == "cuda":
            self.model.set_vit_dtype(torch.float16)  # the reference keeps the frozen ViT in fp16
        self.net = self._wrap(self.model)
        self.preprocess = build_transform(
            self.recipe.transform, self.model.config.vision_config.image_size, self.recipe.target_ratio
        )
        self.cache, self.loader_set = self._loader_dataset()
        self.sampler = EpochBatchSampler(
            len(self.train_set), self.recipe.batch_size, config.seed, self.rank, self.world_size
        )

        self.optimizer = make_optimizer(self.model, self.recipe)
        self.scheduler = make_scheduler(self.optimizer, self.recipe, len(self.sampler), config.schedule_over_run)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

        self.epoch = self.step_in_epoch = self.global_step = 0
        self.offset = 0  # samples of this epoch before its first batch (see `_restore`)
        self.running = self._zero_running()
        self.best: dict | None = None
        self.train_history: list[dict] = []
        self.val_history: list[dict] = []
        if checkpoint is not None:
            self._restore(checkpoint)
        elif self.main:
            self._write_hyperparameters()

    # ------------------------------------------------------------------ building blocks
    def _new_run_dir(self) -> Path:
        if self.config.output_dir:
            return Path(self.config.output_dir)
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        return repo_root() / "runs" / f"{self.config.dataset}_{self.config.preset}_{stamp}"

    def _train_dataset(self, preprocess) -> CIRRDataset | FashionIQDataset:
        root = self.config.data_path
        if self.config.dataset == "CIRR":
            return CIRRDataset(root, "train", "relative", preprocess=preprocess)
        return FashionIQDataset(root, "train", FIQ_CATEGORIES, "relative", preprocess=preprocess, seed=self.config.seed)

    def _base_weights(self) -> str:
        """Where training starts: `--model-path`, else BLIP-2 (the paper) or the pretrained tiny BLIP-2."""
        c = self.config
        if c.model_path:
            return c.model_path
        if c.preset != "tiny":
            return BLIP2_RETRIEVAL
        tiny = Path(c.data_path) / TINY_BLIP2
        if not (tiny / "config.json").is_file():
            raise FileNotFoundError(
                f"{tiny}: no pretrained tiny BLIP-2. The tiny track starts from one, as the paper starts from "
                f"BLIP-2: run `python -m sprc_lib pretrain-tiny --data-path {c.data_path}` (about a minute)."
            )
        return str(tiny)

    def _tokenizer(self, checkpoint: dict | None):
        saved = self.run_dir / "tokenizer"
        if checkpoint is None:
            if self.main:
                load_tokenizer(self.config.tokenizer or self._base_weights()).save_pretrained(saved)
            distributed.barrier()  # the others read what rank 0 wrote
        return load_tokenizer(saved)

    def _model(self, checkpoint: dict | None) -> SPRCModel:
        if checkpoint is not None:
            with no_init_weights():  # every tensor comes from the checkpoint
                model = SPRCModel(SPRCConfig(**checkpoint["model_config"]))
            model.load_state_dict(checkpoint["model"])
            return model
        return load_model(self._base_weights(), preset_config(self.config.preset, len(self.tokenizer)))

    def _wrap(self, model: SPRCModel) -> SPRCModel | DistributedDataParallel:
        """The module the training loss runs through: the model, or DDP around it with several processes.

        DDP copies rank 0's weights to every process when built, then averages the gradients over the
        processes during `backward`. No buffer changes in training, so none is broadcast each step.
        """
        if self.world_size == 1:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)

    def _loader_dataset(self) -> tuple[FeatureCache | None, Dataset]:
        """The cache (if any) and the training items: pixels decoded by the dataset, or frozen-ViT tokens.

        With a cache the validation galleries are cached here as well, and in a multi-process run rank 0
        fills it before the others open it: no process then writes the cache while another reads it.
        """
        if not self.config.feature_cache:
            return None, self._train_dataset(self.preprocess)
        with distributed.main_first():
            cache = FeatureCache(self.config.feature_cache, self.model, self.preprocess)
            for gallery in validation_galleries(self.config.dataset, self.config.data_path):
                CachedImages(gallery, cache, self.device)
            items = CachedImages(self.train_set, cache, self.device)
        return cache, items

    def _zero_running(self) -> dict[str, float]:
        return {"triplets": 0.0, "seconds": 0.0, "loss": 0.0, **{k: 0.0 for k in LOSS_NAMES}}

    def _write_hyperparameters(self) -> None:
        info = {
            "config": asdict(self.config),
            "recipe": self.recipe.to_dict(),
            "schedule": dict(zip(("epochs", "pct_start"), self.recipe.schedule(
                self.recipe.num_epochs, self.config.schedule_over_run), strict=True)),
            "steps_per_epoch": len(self.sampler),
            "world_size": self.world_size,
            "global_batch_size": self.global_batch,
            "device": str(self.device),
            "autocast": str(self.dtype),
            "trainable_parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "torch": torch.__version__,
        }
        (self.run_dir / HYPERPARAMETERS).write_text(json.dumps(info, indent=2, sort_keys=True))

    # ------------------------------------------------------------------ checkpoints
    @property
    def samples_in_epoch(self) -> int:
        """Training triplets of the current epoch consumed so far, by all processes together."""
        return self.offset + self.step_in_epoch * self.global_batch

    def save_checkpoint(self) -> Path:
        """Write the run's state (rank 0 writes; every process calls it, each giving its RNG state)."""
        rng = distributed.all_gather_objects(rng_state(self.device))
        path = self.run_dir / CHECKPOINT
        if not self.main:
            return path
        state = {
            "config": asdict(self.config),
            "run_dir": str(self.run_dir),
            "model_config": self.model.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,  # one state per rank
            "position": {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step},
            "world": {"world_size": self.world_size, "global_batch_size": self.global_batch,
                      "samples_in_epoch": self.samples_in_epoch},
            "running": dict(self.running),
            "best": self.best,
        }
        atomic_save(state, path)
        return path

    def _restore(self, checkpoint: dict) -> None:
        """Continue where the checkpoint stopped, with this run's number of processes.

        The same number as the checkpoint's: everything is restored exactly (the epoch's next batch,
        the schedule, every rank's RNG). Another number (so another global batch): the epoch goes on
        from the first triplet not consumed yet. When the new global batch does not divide the count
        consumed, the new batches start `offset` triplets past a batch boundary, so nothing is seen
        twice or skipped; the epoch's incomplete tail is dropped, as always, and may then be one batch
        longer. OneCycle is rebuilt for the new steps per epoch and fast-forwarded to the same point
        (epoch x steps per epoch + whole new batches consumed), so the rate continues from the same
        fraction of the schedule. Ranks the checkpoint has no RNG state for are seeded afresh.
        """
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        position, world = checkpoint["position"], checkpoint["world"]
        self.epoch, self.global_step = position["epoch"], position["global_step"]
        self.step_in_epoch, self.offset = divmod(world["samples_in_epoch"], self.global_batch)
        if world["world_size"] == self.world_size:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        else:
            start = self.epoch * len(self.sampler) + self.step_in_epoch
            self.scheduler = make_scheduler(
                self.optimizer, self.recipe, len(self.sampler), self.config.schedule_over_run, start_step=start
            )
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.running, self.best = checkpoint["running"], checkpoint["best"]
        self.train_history = read_csv(self.run_dir / "train_metrics.csv")
        self.val_history = read_csv(self.run_dir / "validation_metrics.csv")
        if self.rank < len(checkpoint["rng"]):
            set_rng_state(checkpoint["rng"][self.rank], self.device)
        else:
            seed_everything(self.config.seed + self.rank)

    # ------------------------------------------------------------------ the loop
    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimiser step on one batch, as the reference takes it (AMP, grad scaler, OneCycle).

        The values returned (for the log) are the means over processes.
        """
        self.model.train()
        ids, mask = tokenize(self.tokenizer, batch["caption"], self.model.config.max_txt_len)
        reference = batch["reference"].to(self.device, non_blocking=True)
        target = batch["target"].to(self.device, non_blocking=True)
        with autocast(self.device, self.dtype):
            losses = self.net(reference, target, ids.to(self.device), mask.to(self.device),
                              global_negatives=self.config.global_negatives)
            loss = losses["loss_itc"] + self.recipe.loss_rtc * losses["loss_rtc"]
            loss = loss + self.recipe.loss_align * losses["loss_align"]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        logged = torch.stack([v.detach().float() for v in (*losses.values(), loss)])
        values = dict(zip((*losses, "loss"), distributed.mean_over_ranks(logged).tolist(), strict=True))
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(f"loss is {values['loss']} at epoch {self.epoch} step {self.step_in_epoch}")
        return values

    def _batches(self) -> DataLoader:
        if isinstance(self.train_set, FashionIQDataset):
            self.train_set.set_epoch(self.epoch)
            if isinstance(self.loader_set, FashionIQDataset):
                self.loader_set.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, self.step_in_epoch, self.offset)
        return DataLoader(
            self.loader_set,
            batch_sampler=self.sampler,
            num_workers=self.config.num_workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.config.seed + self.epoch),  # not the global RNG
        )

    def validate(self) -> dict[str, float]:
        """Validation metrics; with several processes, each indexes a share of the gallery (all get the metrics)."""
        c = self.config
        return validate(c.dataset, self.model, self.tokenizer, c.data_path, self.preprocess, self.device, self.dtype,
                        self.cache, num_workers=c.num_workers)

    def _emit(self, kind: str, **info) -> None:
        if self.callback is not None:
            self.callback(kind, {"epoch": self.epoch, "step": self.global_step, **info})

    def _end_epoch(self) -> None:
        n = max(self.running["triplets"], 1.0)
        row = {"epoch": self.epoch, **{k: self.running[k] / n for k in ("loss", *LOSS_NAMES)}}
        row.update(lr=self.scheduler.get_last_lr()[0], seconds=self.running["seconds"],
                   triplets_per_s=self.running["triplets"] / max(self.running["seconds"], 1e-9))
        self.train_history.append(row)
        if self.main:
            write_csv(self.train_history, self.run_dir / "train_metrics.csv")
        self._emit("epoch", metrics=row)
        if self.epoch % self.recipe.validation_frequency == 0:
            metrics = self.validate()
            self.val_history.append({"epoch": self.epoch, **metrics})
            if self.main:
                write_csv(self.val_history, self.run_dir / "validation_metrics.csv")
            self._emit("validation", metrics=metrics)
            self._keep_best(metrics)
        self.epoch += 1
        self.step_in_epoch = self.offset = 0
        self.running = self._zero_running()

    def _keep_best(self, metrics: dict[str, float]) -> None:
        key = KEEP_BEST_KEY["cirr" if self.config.dataset == "CIRR" else "fashioniq"]
        if self.epoch < self.recipe.best_from_epoch or (self.best and metrics[key] <= self.best["score"]):
            return
        self.best = {"epoch": self.epoch, "key": key, "score": metrics[key], "metrics": metrics}
        if self.config.save_training and self.config.save_best and self.main:
            save_model_dir(self.model, self.tokenizer, self.run_dir / "best", self.best)

    def _announce(self) -> None:
        """What one step is: the global batch, the rate, and how many targets each query is contrasted with."""
        if not self.main:
            return
        r, w = self.recipe, self.world_size
        if w == 1:
            print(f"batch {r.batch_size}, learning rate {r.learning_rate:g} (OneCycle peak): each query against "
                  f"{r.batch_size} targets; {len(self.sampler)} steps per epoch")
            return
        negatives, kind = (self.global_batch, "global") if self.config.global_negatives else (r.batch_size, "local")
        print(f"{w} processes x batch {r.batch_size} = global batch {self.global_batch}; learning rate "
              f"{r.learning_rate:g} (OneCycle peak, as set: not scaled with the processes); {kind} negatives: "
              f"each query against {negatives} targets; {len(self.sampler)} steps per epoch")

    def fit(self) -> TrainResult:
        """Train to the recipe's last epoch (or to `stop_after_steps`), checkpointing along the way."""
        c, steps_this_call = self.config, 0
        self._announce()
        try:
            while self.epoch < self.recipe.num_epochs:
                batches = self._batches()
                bar = tqdm(batches, total=self.sampler.stop, initial=self.step_in_epoch,
                           desc=f"epoch {self.epoch + 1}/{self.recipe.num_epochs}", leave=False, disable=not self.main)
                for batch in bar:
                    start = time.perf_counter()
                    values = self.train_step(batch)
                    size = len(batch["caption"]) * self.world_size
                    self.running["triplets"] += size
                    self.running["seconds"] += time.perf_counter() - start
                    for k, v in values.items():
                        self.running[k] += v * size
                    self.step_in_epoch += 1
                    self.global_step += 1
                    steps_this_call += 1
                    bar.set_postfix({k: f"{self.running[k] / self.running['triplets']:.3f}" for k in values})
                    self._emit("step", losses=values, lr=self.scheduler.get_last_lr()[0])
                    if c.checkpoint_every and self.global_step % c.checkpoint_every == 0:
                        self.save_checkpoint()
                    if c.stop_after_steps and steps_this_call >= c.stop_after_steps:
                        bar.close()
                        self.save_checkpoint()
                        distributed.barrier()
                        return self._result(finished=False)
                bar.close()
                self._end_epoch()
                self.save_checkpoint()
        except KeyboardInterrupt:
            if self.world_size == 1:  # several processes cannot meet to save now: their last checkpoint stands
                path = self.save_checkpoint()
                print(f"\nInterrupted: saved {path}; continue with --resume {self.run_dir}")
            elif self.main:
                print(f"\nInterrupted: continue from the last checkpoint with --resume {self.run_dir}")
            raise
        if c.save_training and self.main:
            save_model_dir(self.model, self.tokenizer, self.run_dir / "final", {"epoch": self.epoch - 1})
        distributed.barrier()  # when any process returns, the run's files are complete
        return self._result(finished=True)

    def _result(self, finished: bool) -> TrainResult:
        return TrainResult(self.run_dir, self.model, self.tokenizer, self.train_history, self.val_history,
                           self.best, finished)


def train(config: TrainConfig, resume: str | Path | None = None, callback: Callable | None = None) -> TrainResult:
    """Run (or resume) one training run; see `TrainConfig` and `sprc_lib.recipes`.

    Under torchrun every process calls this: it joins the process group for the run and leaves it after.
    """
    with distributed.session(distributed.process_device(config.device)):
        return Trainer(config, resume=resume, callback=callback).fit()
