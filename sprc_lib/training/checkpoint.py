"""Where a run stands, and the checkpoint that saves and restores it exactly, with any number of processes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from sprc_lib import distributed
from sprc_lib.model import run_checkpoint
from sprc_lib.training import runs
from sprc_lib.training.build import RunParts
from sprc_lib.training.step import make_scheduler


def zero_running() -> dict[str, float]:
    """The epoch's running sums: triplets, seconds, and (added by the first step) each loss weighted by its
    batch's size."""
    return {"triplets": 0.0, "seconds": 0.0}


@dataclass
class Progress:
    """The position of a run (epoch, step), its running sums, its best validation and its histories."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    offset: int = 0  # samples of this epoch before its first batch (see `restore`)
    running: dict[str, float] = field(default_factory=zero_running)
    best: dict | None = None
    train_history: list[dict] = field(default_factory=list)
    val_history: list[dict] = field(default_factory=list)

    @property
    def epoch_number(self) -> int:
        """The epoch in progress as people count it, from 1 (what the metric files and messages say)."""
        return self.epoch + 1

    def samples_in_epoch(self, global_batch: int) -> int:
        """Training triplets of the current epoch consumed so far, by all processes together."""
        return self.offset + self.step_in_epoch * global_batch

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = self.offset = 0
        self.running = zero_running()


def save(run: RunParts, progress: Progress) -> Path:
    """Write the run's state (rank 0 writes; every process calls it, each giving its RNG state)."""
    rng = distributed.all_gather_objects(runs.rng_state(run.device))
    path = run.run_dir / runs.CHECKPOINT
    if not run.main:
        return path
    frozen = run.frozen_from
    state = {
        "config": asdict(run.settings),
        "model_config": run.model.config.to_dict(),
        # The frozen weights stay out (the ViT: most of a checkpoint at the real size): a resume rebuilds
        # them from the run's base model, checked by content (`model.loading.model_from_saved`).
        "model": {k: v for k, v in run.model.state_dict().items() if not frozen or k not in frozen["names"]},
        "frozen_from": frozen,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": rng,  # one state per rank
        "position": {"epoch": progress.epoch, "step_in_epoch": progress.step_in_epoch,
                     "global_step": progress.global_step},
        "world": {"world_size": run.world_size, "global_batch_size": run.global_batch,
                  "samples_in_epoch": progress.samples_in_epoch(run.global_batch)},
        "running": dict(progress.running),
        "best": progress.best,
        "fingerprint": run.fingerprint,
    }
    run_checkpoint.write(state, path)
    return path


def covered_rows(run: RunParts, name: str, epoch: int) -> list[dict]:
    """The rows of a metrics CSV that the checkpoint covers: those of the epochs before its position (rows count
    epochs from 1, the position from 0).

    An epoch's rows are written before its checkpoint, so a run stopped in between (kill -9 during
    validation or while saving, a full disk) holds rows the resumed run writes again: the checkpoint
    is the source of truth, and rank 0 rewrites the file to its rows before going on.
    """
    path = run.run_dir / name
    rows = runs.read_csv(path)
    kept = [row for row in rows if row["epoch"] <= epoch]
    if run.main and len(kept) < len(rows):
        runs.write_csv(kept, path)
    return kept


def restore(run: RunParts, checkpoint: dict) -> Progress:
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
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    position, world = checkpoint["position"], checkpoint["world"]
    step_in_epoch, offset = divmod(world["samples_in_epoch"], run.global_batch)
    progress = Progress(
        epoch=position["epoch"], step_in_epoch=step_in_epoch, global_step=position["global_step"], offset=offset,
        running=checkpoint["running"], best=checkpoint["best"],
        train_history=covered_rows(run, runs.TRAIN_CSV, position["epoch"]),
        val_history=covered_rows(run, runs.VALIDATION_CSV, position["epoch"]),
    )
    if world["world_size"] == run.world_size:
        run.scheduler.load_state_dict(checkpoint["scheduler"])
    else:
        start = progress.epoch * len(run.sampler) + progress.step_in_epoch
        run.scheduler = make_scheduler(run.optimizer, run.settings.recipe, len(run.sampler),
                                       run.settings.schedule_over_run, start_step=start)
    run.scaler.load_state_dict(checkpoint["scaler"])
    if run.rank < len(checkpoint["rng"]):
        runs.set_rng_state(checkpoint["rng"][run.rank], run.device)
    else:
        runs.seed_everything(run.settings.seed + run.rank)
    return progress
