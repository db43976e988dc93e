"""Everything a training run is made of, built from its config: model, data, optimiser, evaluation.

`build_run` is the set-up half of the trainer; `sprc_lib.training.trainer` holds the loop that uses it.
In a multi-process run (a process group is up, as `train` sets one up under torchrun) every process
builds its own parts: the same model (DDP copies rank 0's weights), its share of each batch, and one
run folder that rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from sprc_lib import distributed
from sprc_lib.data.cirr import CIRRDataset
from sprc_lib.data.fashioniq import FashionIQDataset
from sprc_lib.data.schema import FASHIONIQ_CATEGORIES
from sprc_lib.env import autocast_dtype
from sprc_lib.evaluation.context import EvalContext, make_eval_context
from sprc_lib.evaluation.protocols import validation_galleries
from sprc_lib.evaluation.rerank import Reranker
from sprc_lib.files import atomic_path
from sprc_lib.model import SPRCModel, preset_config, run_checkpoint
from sprc_lib.model.fingerprint import weights_fingerprint
from sprc_lib.model.loading import frozen_weights, load_model, load_reranker, model_from_saved
from sprc_lib.model.rerank import RerankerModel
from sprc_lib.model.sprc import AUXILIARY
from sprc_lib.model.tokenizer import load_tokenizer
from sprc_lib.training import runs
from sprc_lib.training.config import SettingError, TrainConfig
from sprc_lib.training.fingerprint import data_fingerprint
from sprc_lib.training.sampler import EpochBatchSampler
from sprc_lib.training.step import Optimisation, make_optimizer, make_scheduler


@dataclass
class RunParts:
    """The pieces of one run in one process."""

    settings: TrainConfig  # resolved (`training.config.resolve`)
    run_dir: Path
    rank: int
    world_size: int
    device: torch.device  # this process's
    dtype: torch.dtype | None  # autocast's, from the settings' precision on this device (None: full precision)
    model: SPRCModel | RerankerModel
    net: SPRCModel | RerankerModel | DistributedDataParallel  # what the training loss runs through
    tokenizer: transformers.BertTokenizer  # the run's own (saved in its folder and beside every model it saves)
    evaluation: EvalContext  # validation's: model, tokenizer, transform, device, dtype, cache
    train_set: CIRRDataset | FashionIQDataset  # names and captions
    items: Dataset  # what the loader reads: the train set with pixels, or with cached ViT tokens
    sampler: EpochBatchSampler
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.OneCycleLR
    scaler: torch.amp.GradScaler
    stage1: Stage1 | None = None  # re-ranker runs: the SPRC model whose top K validation re-orders
    stage2: Reranker | None = None  # re-ranker runs: the model being trained, as validation re-orders with it
    fingerprint: dict = field(default_factory=dict)  # what the run trains on, by content (`training.fingerprint`)
    frozen_from: dict | None = None  # the frozen weights its checkpoints leave out (`model.loading.frozen_weights`)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def global_batch(self) -> int:
        return self.settings.batch_size * self.world_size

    @property
    def optimisation(self) -> Optimisation:
        """What each step updates (the schedule is rebuilt on a resume with another number of processes)."""
        return Optimisation(self.optimizer, self.scaler, self.scheduler)


def train_dataset(settings: TrainConfig) -> CIRRDataset | FashionIQDataset:
    """The training triplets, names only (the loader's items add the images)."""
    if settings.dataset == "CIRR":
        return CIRRDataset(settings.data_path, "train", "relative", skip_missing=settings.skip_missing)
    return FashionIQDataset(settings.data_path, "train", FASHIONIQ_CATEGORIES, "relative",
                            skip_missing=settings.skip_missing, seed=settings.seed)


def _model(settings: TrainConfig, tokenizer, checkpoint: dict | None) -> SPRCModel | RerankerModel:
    if checkpoint is not None:  # per-sample prompts join once the training set is known (`build_run`)
        return model_from_saved(*run_checkpoint.model_parts(checkpoint), "the run's checkpoint")
    sizes = preset_config(settings.preset, len(tokenizer))
    if settings.reranker:
        return load_reranker(settings.model_path, sizes)
    return load_model(settings.model_path, sizes)


@dataclass
class Stage1:
    """The SPRC model a re-ranker run's validation re-orders. It is loaded for each validation and released after
    it, so it never sits beside the run's gradients and optimiser moments; it scores on the re-ranker's device,
    precision, transform and cache folder, with the re-ranker's frozen ViT when the two are the same (models
    started from one BLIP-2 are), so the cache is shared too."""

    settings: TrainConfig
    evaluation: EvalContext  # the re-ranker's

    @contextlib.contextmanager
    def loaded(self) -> Iterator[EvalContext]:
        source = self.settings.stage1_model
        model = load_model(source, preset_config(self.settings.preset, len(self.evaluation.tokenizer)),
                           vit_from=self.evaluation.model)
        if not isinstance(model, SPRCModel):
            raise SettingError(f"`stage1_model` {source}: this is a re-ranker; pass an SPRC model")
        yield validation_context(model, self.evaluation.tokenizer, self.settings, self.evaluation.device)

    def check(self) -> None:
        """Load it once when the run starts, so that a wrong --stage1-model stops the run before its first step."""
        with self.loaded() as stage1:
            if not stage1.model.shares_vit_with(self.evaluation.model) and distributed.rank() == 0:
                print(f"note: the frozen ViT of `stage1_model` {self.settings.stage1_model} differs from the "
                      "re-ranker's, so each validation holds both")


def validation_context(model: SPRCModel | RerankerModel, tokenizer, settings: TrainConfig,
                       device: torch.device) -> EvalContext:
    """A model as a run's validation scores with it. Validation in training scores in float32 even where
    `validate` scores exactly: it steers keep-best on weights that differ between machines anyway, and it runs
    every epoch, where float64's extra time would add up."""
    return make_eval_context(model, tokenizer, settings, device=device, exact=False)


def _wrap(model: SPRCModel, device: torch.device) -> SPRCModel | DistributedDataParallel:
    """The model, or DDP around it with several processes.

    DDP copies rank 0's weights to every process when built, then averages the gradients over the
    processes during `backward`. No buffer changes in training, so none is broadcast each step.
    """
    if distributed.world_size() == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def _stages(settings: TrainConfig, evaluation: EvalContext) -> tuple[Stage1, Reranker]:
    stage1 = Stage1(settings, evaluation)
    stage1.check()
    return stage1, Reranker(evaluation, settings.rerank_top_k, settings.rerank_fuse)


def build_run(settings: TrainConfig, run_dir: Path, checkpoint: dict | None = None) -> RunParts:
    """The parts of a run with resolved `settings`; a fresh one (no `checkpoint`) is seeded. Nothing is written into
    `run_dir` here (`open_run_dir` does that once every part is built), so a run that cannot start leaves no folder.

    With a feature cache, rank 0 fills it (training and validation images) before the others open it,
    so the ranks never compute the same images twice.
    """
    s = settings
    rank, world_size = distributed.rank(), distributed.world_size()
    if rank != 0:  # one log for the run: rank 0's
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    if checkpoint is None:
        runs.seed_everything(s.seed + rank)  # dropout masks differ between processes; weights come from rank 0
    device = distributed.process_device(s.device)
    # A new run's tokenizer is saved into its folder when the run starts; a resumed run reads it from there.
    tokenizer = load_tokenizer(s.tokenizer if checkpoint is None else run_dir / runs.TOKENIZER)
    model = _model(s, tokenizer, checkpoint)
    model.checkpoint_qformer(s.gradient_checkpointing)
    train_set = train_dataset(s)
    if s.auxiliary_prompt == "per-sample":
        if world_size > 1:  # the shared prompt gets no gradient then, which DistributedDataParallel refuses
            raise SettingError("`auxiliary_prompt` per-sample is an ablation for one process: run it without torchrun")
        model.add_auxiliary_prompts(len(train_set), None if checkpoint is None else checkpoint["model"][AUXILIARY])
    with distributed.main_first():
        evaluation = validation_context(model, tokenizer, s, device)
        evaluation.note(train_set)
        galleries = [evaluation.note(g) for g in validation_galleries(s.dataset, s.data_path, s.skip_missing)]
        evaluation.warm(galleries)
        items = evaluation.images(train_set)
        stage1, stage2 = _stages(s, evaluation) if s.reranker else (None, None)
    if len(train_set) < s.batch_size * world_size:
        raise SettingError(f"`batch_size` {s.batch_size}: {train_set.name} has {len(train_set)} training "
                           f"triplets, too few for one batch of {s.batch_size} x {world_size} process(es); "
                           "lower `batch_size`")
    sampler = EpochBatchSampler(len(train_set), s.batch_size, s.seed, rank, world_size)
    recipe = s.recipe
    optimizer = make_optimizer(model, recipe)
    prints = _fingerprint(s, checkpoint)
    if checkpoint is None:
        frozen = frozen_weights(model, s.model_path, s.preset, prints["base_model"])
    else:  # a checkpoint written before they were left out holds every tensor, and its successors do too
        frozen = checkpoint.get("frozen_from")
    dtype = autocast_dtype(s.precision, device)
    return RunParts(
        s, run_dir, rank, world_size, device, dtype, model, _wrap(model, device), tokenizer, evaluation, train_set,
        items, sampler, optimizer, make_scheduler(optimizer, recipe, len(sampler), s.schedule_over_run),
        torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), stage1, stage2, prints, frozen,
    )


def _fingerprint(settings: TrainConfig, checkpoint: dict | None) -> dict:
    """A new run's data and starting weights by content; a resumed run keeps its own (one saved before
    fingerprints were kept gets its data's now)."""
    if checkpoint is not None:
        return checkpoint.get("fingerprint") or {"data": data_fingerprint(settings.dataset, settings.data_path)}
    return {"data": data_fingerprint(settings.dataset, settings.data_path),
            "base_model": weights_fingerprint(settings.model_path)}


@contextlib.contextmanager
def open_run_dir(run: RunParts, fresh: bool, overwrite: bool = False) -> Iterator[None]:
    """The run folder, locked by rank 0 for as long as the run writes it.

    A fresh run creates it, checks again under the lock that it holds no other run (or clears that run,
    with `overwrite`), and writes its tokenizer and hyperparameters before the first step.
    """
    if not run.main:
        distributed.barrier()  # rank 0 has the folder ready
        yield
        return
    run.run_dir.mkdir(parents=True, exist_ok=True)
    with runs.locked(run.run_dir):
        if fresh:
            runs.check_new_run_dir(run.run_dir, overwrite)
            if overwrite:
                runs.clear_run(run.run_dir)
            with atomic_path(run.run_dir / runs.TOKENIZER) as tmp:
                run.tokenizer.save_pretrained(tmp)
            runs.write_hyperparameters(run.run_dir, hyperparameters(run))
        distributed.barrier()
        yield


def hyperparameters(run: RunParts) -> dict[str, Any]:
    """What the run's `training_hyperparameters.json` says about it."""
    recipe = run.settings.recipe
    epochs, pct_start = recipe.schedule(recipe.num_epochs, run.settings.schedule_over_run)
    return {
        "config": asdict(run.settings),
        "recipe": recipe.to_dict(),
        "schedule": {"epochs": epochs, "pct_start": pct_start},
        "steps_per_epoch": len(run.sampler),
        "world_size": run.world_size,
        "global_batch_size": run.global_batch,
        "device": str(run.device),
        "autocast": str(run.dtype),
        "trainable_parameters": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        "torch": torch.__version__,
        "skipped_missing_images": run.evaluation.skipped,  # what --skip-missing dropped, by split
        "fingerprint": run.fingerprint,
    }
