"""Training SPRC with the authors' recipe, in a loop you can read top to bottom, resumable to the step.

`train(config)` starts a run, `resume_training(run_dir)` continues one. The set-up is
`sprc_lib.training.build`, the checkpoint `sprc_lib.training.checkpoint`, the run folder's files
`sprc_lib.training.runs`; what is left here is the loop.

Resuming restores the checkpoint exactly, so an interrupted run ends with the weights an
uninterrupted one would have: the batch order comes from (seed, epoch), not from a global RNG.

Several processes (`torchrun --nproc_per_node N -m sprc_lib train ...`) train one model with
DistributedDataParallel: each step takes one global batch of `batch_size x N` triplets, each process
its slice; rank 0 alone writes files, logs and shows progress. The checkpoint counts the *samples*
consumed in the epoch, so a run can resume with another number of processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from sprc_lib import distributed
from sprc_lib.data.base import collate
from sprc_lib.data.errors import DataError
from sprc_lib.data.workers import ignore_stop_signals
from sprc_lib.env import host_memory_returned
from sprc_lib.errors import DiskFullError, TrainingDiverged
from sprc_lib.evaluation.metrics import KEEP_BEST_KEY
from sprc_lib.evaluation.protocols import validate
from sprc_lib.files import shown_path
from sprc_lib.model import SPRCModel, run_checkpoint
from sprc_lib.model.rerank import RerankerModel
from sprc_lib.model.tokenizer import tokenize
from sprc_lib.progress import tqdm
from sprc_lib.training import checkpoint, reports, runs
from sprc_lib.training.build import RunParts, build_run, open_run_dir
from sprc_lib.training.config import Change, SettingError, TrainConfig, resolve, resolve_resume
from sprc_lib.training.disk import run_disk
from sprc_lib.training.fingerprint import check_same_data, check_same_weights
from sprc_lib.training.step import optimizer_step
from sprc_lib.training.stops import StopRequests

Callback = Callable[[str, dict], None]


@dataclass
class TrainResult:
    run_dir: Path
    model: SPRCModel | RerankerModel
    tokenizer: Any
    train_history: list[dict] = field(default_factory=list)
    val_history: list[dict] = field(default_factory=list)
    best: dict | None = None
    finished: bool = True
    stopped: str | None = None  # why an unfinished run stopped: "stop_after_steps", "SIGINT", "SIGTERM"


class Trainer:
    """One run in one process: its parts, where it stands, and the loop. Several processes move in lock-step."""

    def __init__(self, run: RunParts, progress: checkpoint.Progress | None = None, callback: Callback | None = None):
        self.run, self.callback = run, callback
        self.progress = progress or checkpoint.Progress()
        self._report: Callback | None = None  # TensorBoard's, while `fit` runs (`--report-to`)
        self._stops = StopRequests()
        self._in_step = False

    def _stop(self, why: str) -> TrainResult:
        """Save where the run stands and say how to go on."""
        run, p = self.run, self.progress
        path = checkpoint.save(run, p)
        distributed.barrier()
        if run.main:
            reason = "as `stop_after_steps` asked" if why == "stop_after_steps" else why
            print(f"\nStopped ({reason}) after epoch {p.epoch_number} step {p.step_in_epoch}: saved {path}; continue "
                  f"with `python -m sprc_lib {'train-reranker' if run.settings.reranker else 'train'} --resume "
                  f"{run.run_dir}`")
        return self._result(finished=False, stopped=why)

    def _interrupted(self) -> None:
        """An immediate stop (a second Ctrl-C, or one raised by a callback): save only a consistent state."""
        run, p = self.run, self.progress
        if run.world_size > 1 or self._in_step:  # processes cannot meet now, or the optimiser is half-stepped
            where = "in the middle of a step" if self._in_step else "with several processes"
            if run.main:
                print(f"\nInterrupted {where}: the last checkpoint stands; continue with `resume` {run.run_dir}")
            return
        print(f"\nInterrupted: saved {checkpoint.save(run, p)}; continue with `resume` {run.run_dir}")

    def _saved_after(self, err: DataError) -> str:
        """The message of a data error met while loading a batch, after saving the progress made so far."""
        run, p = self.run, self.progress
        if run.world_size > 1:
            return f"{err}\nThe last checkpoint stands; continue with `resume` {run.run_dir} once it is fixed"
        path = checkpoint.save(run, p)
        return (f"{err}\nProgress is saved in {path} (epoch {p.epoch_number}, step {p.step_in_epoch}); fix the "
                f"file, then continue with `resume` {run.run_dir}")

    def fit(self, stop_after_steps: int | None = None) -> TrainResult:
        """Train to the recipe's last epoch, checkpointing along the way.

        It stops early, with a checkpoint, after `stop_after_steps` steps, or at the end of the step in
        flight when Ctrl-C or the termination signal (a scheduler's, Colab's) arrives; a second Ctrl-C
        stops at once, and the last checkpoint stands.
        """
        run, p, steps = self.run, self.progress, 0
        self._announce()
        report_to = run.settings.report_to if run.main else "none"
        with reports.reporting(report_to, run.run_dir, p.global_step) as self._report, self._stops.deferred():
            try:
                while p.epoch < run.settings.num_epochs:
                    bar = tqdm(self._batches(), total=run.sampler.stop, initial=p.step_in_epoch, leave=False,
                               desc=f"epoch {p.epoch_number}/{run.settings.num_epochs}", disable=not run.main)
                    for batch in bar:
                        values = self.train_step(batch)
                        steps += 1
                        bar.set_postfix({k: f"{p.running[k] / p.running['triplets']:.3f}" for k in values})
                        if run.settings.checkpoint_every and p.global_step % run.settings.checkpoint_every == 0:
                            checkpoint.save(run, p)
                        stop = "stop_after_steps" if stop_after_steps and steps >= stop_after_steps else None
                        if stop or self._stops.requested(run.world_size):
                            bar.close()
                            return self._stop(stop or self._stops.name)
                    bar.close()
                    self._end_epoch()
                    checkpoint.save(run, p)
                    if self._stops.requested(run.world_size) and p.epoch < run.settings.num_epochs:
                        return self._stop(self._stops.name)
            except KeyboardInterrupt:
                self._interrupted()
                raise
            except DataError as err:
                raise DataError(self._saved_after(err)) from None
            except DiskFullError as err:
                raise DiskFullError(f"{err}. The last complete checkpoint stands: continue with `resume` "
                                    f"{run.run_dir} once there is room") from None
        if run.settings.save_training and run.main:
            # the epochs done: the last one, counted from 1
            runs.save_model_dir(run.model, run.tokenizer, run.run_dir / "final", {"epoch": p.epoch})
        distributed.barrier()  # when any process returns, the run's files are complete
        return self._result(finished=True)

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimiser step on one batch; adds it to the epoch's sums. Values are the means over processes."""
        run, p, start = self.run, self.progress, time.perf_counter()
        self._in_step = True
        device = run.device
        ids, mask = tokenize(run.tokenizer, batch["caption"], run.model.config.max_txt_len)
        tensors = {"reference": batch["reference"].to(device, non_blocking=True),
                   "target": batch["target"].to(device, non_blocking=True),
                   "input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if run.settings.auxiliary_prompt == "per-sample":
            tensors["sample"] = batch["index"].to(device)
        losses = optimizer_step(run.net, tensors, run.optimisation, run.settings)
        logged = distributed.mean_over_ranks(torch.stack([v.float() for v in losses.values()]))
        values = dict(zip(losses, logged.tolist(), strict=True))
        if not math.isfinite(values["loss"]):
            raise TrainingDiverged(
                f"the loss is {values['loss']} at epoch {p.epoch_number}, step {p.step_in_epoch + 1}: the run diverged "
                f"(nothing was saved from this step). Resume from its last checkpoint (`resume` {run.run_dir}), "
                "or start a new run with a lower `learning_rate` or `precision` fp32"
            )
        size = len(batch["caption"]) * run.world_size
        p.running["triplets"] += size
        p.running["seconds"] += time.perf_counter() - start
        for k, v in values.items():
            p.running[k] = p.running.get(k, 0.0) + v * size
        p.step_in_epoch += 1
        p.global_step += 1
        self._in_step = False  # from here on a checkpoint is consistent with the optimiser again
        self._emit("step", losses=values, lr=run.scheduler.get_last_lr()[0])
        return values

    def _batches(self) -> DataLoader:
        run, p = self.run, self.progress
        for dataset in (run.train_set, run.items):  # FashionIQ draws its caption order by epoch
            dataset.set_epoch(p.epoch)
        run.sampler.set_epoch(p.epoch, p.step_in_epoch, p.offset)
        return DataLoader(
            run.items, batch_sampler=run.sampler, num_workers=run.settings.num_workers, collate_fn=collate,
            pin_memory=run.device.type == "cuda", worker_init_fn=ignore_stop_signals,
            generator=torch.Generator().manual_seed(run.settings.seed + p.epoch),  # not the global RNG
        )

    def _end_epoch(self) -> None:
        run, p = self.run, self.progress
        n = max(p.running["triplets"], 1.0)
        row = {"epoch": p.epoch_number, **{k: p.running.get(k, 0.0) / n for k in ("loss", *run.model.loss_names)},
               "lr": run.scheduler.get_last_lr()[0], "seconds": p.running["seconds"],
               "triplets_per_s": p.running["triplets"] / max(p.running["seconds"], 1e-9)}
        p.train_history.append(row)
        if run.main:
            runs.write_csv(p.train_history, run.run_dir / runs.TRAIN_CSV)
        self._emit("epoch", metrics=row)
        if p.epoch % run.settings.validation_frequency == 0:
            if run.stage1 is None:
                metrics = validate(run.evaluation, run.settings.dataset, run.settings.data_path)
            else:
                with run.stage1.loaded() as stage1:
                    metrics = validate(stage1, run.settings.dataset, run.settings.data_path, run.stage2)
            p.val_history.append({"epoch": p.epoch_number, **metrics})
            if run.main:
                runs.write_csv(p.val_history, run.run_dir / runs.VALIDATION_CSV)
            self._emit("validation", metrics=metrics)
            self._keep_best(metrics)
        p.next_epoch()

    def _keep_best(self, metrics: dict[str, float]) -> None:
        run, p = self.run, self.progress
        key = KEEP_BEST_KEY[run.settings.dataset]
        if p.epoch < run.settings.recipe.best_from_epoch or (p.best and metrics[key] <= p.best["score"]):
            return
        p.best = {"epoch": p.epoch_number, "key": key, "score": metrics[key], "metrics": metrics}
        if run.settings.save_training and run.settings.save_best and run.main:
            runs.save_model_dir(run.model, run.tokenizer, run.run_dir / "best", p.best)

    def _emit(self, event: str, **info) -> None:
        info = {"epoch": self.progress.epoch, "step": self.progress.global_step, **info}
        for listener in (self.callback, self._report):
            if listener is not None:
                listener(event, info)

    def _announce(self) -> None:
        """What one step is: the global batch, the rate, and how many targets each query is contrasted with."""
        run = self.run
        if not run.main:
            return
        r, w, steps = run.settings, run.world_size, len(run.sampler)
        for line in run.evaluation.skipped_lines():
            print(line)
        per_sample = len(run.train_set) if run.settings.auxiliary_prompt == "per-sample" else 0
        disk = run_disk(run.model.config, reranker=r.reranker, per_sample=per_sample)
        print(f"run folder: {disk.describe(run.settings.save_training)}")
        if r.micro_batch and r.micro_batch < r.batch_size:
            print(f"gradient cache: each process's batch of {r.batch_size} in micro-batches of "
                  f"{r.micro_batch} (the same loss and gradients, the memory of one micro-batch)")
        if r.reranker:
            print(f"re-ranker: {w} process(es) x batch {r.batch_size}, each triplet with a hard-negative target and "
                  f"a hard-negative query (drawn by the frozen starting Q-Former): {3 * r.batch_size} ITM examples "
                  f"per process and step; learning rate {r.learning_rate:g} (OneCycle peak); {steps} steps per "
                  f"epoch; validation re-orders the top {run.stage2.top_k} of {r.stage1_model}")
            return
        if w == 1:
            print(f"batch {r.batch_size}, learning rate {r.learning_rate:g} (OneCycle peak): each query against "
                  f"{r.batch_size} targets; {steps} steps per epoch")
            return
        negatives, scope = (run.global_batch, "global") if r.global_negatives else (r.batch_size, "local")
        print(f"{w} processes x batch {r.batch_size} = global batch {run.global_batch}; learning rate "
              f"{r.learning_rate:g} (OneCycle peak, as set: not scaled with the processes); {scope} negatives: "
              f"each query against {negatives} targets; {steps} steps per epoch")

    def _result(self, finished: bool, stopped: str | None = None) -> TrainResult:
        p = self.progress
        return TrainResult(self.run.run_dir, self.run.model, self.run.tokenizer, p.train_history,
                           p.val_history, p.best, finished, stopped)


def train(config: TrainConfig, callback: Callback | None = None, stop_after_steps: int | None = None,
          overwrite: bool = False) -> TrainResult:
    """Start a run of `config` (see `TrainConfig` and `sprc_lib.training.recipes`); `stop_after_steps` stops it early.

    The run folder must hold no run yet, unless `overwrite` replaces it; another run writing the same
    folder at the same time is refused. Under torchrun every process calls this: it joins the process
    group for the run and leaves it after.
    """
    settings = resolve(config)
    _check_stop(stop_after_steps)
    with distributed.session(distributed.process_device(settings.device)), host_memory_returned():
        run_dir = Path(distributed.broadcast_object(str(runs.new_run_dir(settings.dataset, settings.preset,
                                                                           settings.output_dir))))  # rank 0's clock
        runs.check_new_run_dir(run_dir, overwrite)
        run = build_run(settings, run_dir)
        with open_run_dir(run, fresh=True, overwrite=overwrite):
            return Trainer(run, callback=callback).fit(stop_after_steps)


def resume_training(run_dir: str | Path, callback: Callback | None = None, stop_after_steps: int | None = None,
                    **given: Any) -> TrainResult:
    """Continue a stopped run in its folder; `given` may change the APPLIED settings (see `training.config`)."""
    path = runs.find_checkpoint(run_dir)
    # Read whole, not memory-mapped: the optimizer's moments would stay views of the file and keep every page
    # the restore read (the trainable weights too) in memory for the whole run.
    saved = run_checkpoint.read(path, mmap=False)
    prints = saved.get("fingerprint") or {}
    if given.get("model_path") and "base_model" in prints:  # by content: a moved copy is the same weights
        moved = given.pop("model_path")
        check_same_weights(prints["base_model"], moved)
        if saved.get("frozen_from"):  # the frozen weights the checkpoint leaves out come from the copy
            saved["frozen_from"] = {**saved["frozen_from"], "source": str(Path(moved).resolve())}
    settings, changes = resolve_resume(given, saved["config"], run_dir=str(path.parent))
    if "data" in prints:
        check_same_data(prints["data"], settings.dataset, settings.data_path)
    _check_stop(stop_after_steps)
    with distributed.session(distributed.process_device(settings.device)), host_memory_returned():
        run = build_run(settings, path.parent, saved)
        with open_run_dir(run, fresh=False):
            progress = checkpoint.restore(run, saved)
            del saved  # the restored model holds copies of its tensors: let them go
            if run.main:
                epochs = settings.num_epochs
                print(f"resuming {shown_path(run.run_dir)}: all {epochs} epochs are done, nothing left to train"
                      if progress.epoch >= epochs else
                      f"resuming {shown_path(run.run_dir)} in epoch {progress.epoch_number} of {epochs}, after its "
                      f"step {progress.step_in_epoch} (step {progress.global_step} of the run)")
            if changes and run.main:
                _record(run, progress, changes)
            return Trainer(run, progress, callback).fit(stop_after_steps)


def _check_stop(stop_after_steps: int | None) -> None:
    if stop_after_steps is not None and stop_after_steps < 1:
        raise SettingError(f"`stop_after_steps` {stop_after_steps}: give a number of steps of at least 1")


def _record(run: RunParts, progress: checkpoint.Progress, changes: list[Change]) -> None:
    print("applied from here on: " + "; ".join(str(c) for c in changes))
    runs.record_changes(run.run_dir, [{"setting": c.setting, "from": c.old, "to": c.new, "epoch": progress.epoch_number,
                                       "global_step": progress.global_step} for c in changes])
