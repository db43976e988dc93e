"""A run folder on disk: what a training run writes, and the random state it saves to resume exactly.

    training_hyperparameters.json   the config, the resolved recipe, and settings changed on resume
    train_metrics.csv               one row per epoch (counted from 1): mean losses, learning rate, throughput
    validation_metrics.csv          one row per validation, with its epoch (from 1)
    tokenizer/                      the tokenizer the run uses
    checkpoint.pt                   model, optimiser, scheduler, scaler, RNG states and position
                                    (`sprc_lib.model.run_checkpoint` describes it)
    best/  final/                   saved models (`save_pretrained` + tokenizer), with --save-training
    tensorboard/                    the same curves for TensorBoard, with --report-to tensorboard

Every file is written beside its place and renamed over it, so an interruption never leaves half a file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout

from sprc_lib.errors import RunFolderError
from sprc_lib.files import atomic_path, write_atomic
from sprc_lib.model import run_checkpoint
from sprc_lib.paths import runs_root
from sprc_lib.training.reports import TENSORBOARD

CHECKPOINT = run_checkpoint.FILE
HYPERPARAMETERS = "training_hyperparameters.json"
TRAIN_CSV = "train_metrics.csv"
VALIDATION_CSV = "validation_metrics.csv"
TOKENIZER = "tokenizer"


def new_run_dir(dataset: str, preset: str, output_dir: str | None) -> Path:
    """`output_dir`, or a fresh `runs/<dataset>_<preset>_<time>` under the repository."""
    if output_dir:
        return Path(output_dir)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return runs_root() / f"{dataset}_{preset}_{stamp}"


def find_checkpoint(resume: str | Path) -> Path:
    """The checkpoint of a run folder (or the file itself)."""
    path = Path(resume)
    if not path.exists():
        raise RunFolderError(f"`resume` {resume}: no such folder or file; pass the folder of a stopped run")
    if path.is_dir() and not (path / CHECKPOINT).is_file() and (path / "config.json").is_file():
        raise RunFolderError(f"`resume` {resume}: a saved model, not a run folder; to train from it, start a new "
                             f"run with `model_path` {resume}")
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.is_file():
        raise RunFolderError(f"`resume` {resume}: no {CHECKPOINT} there to resume from; pass the run folder "
                             "(or its checkpoint.pt) of a run that has saved one")
    return path


# What a run writes into its folder; a folder holding any of the first two holds a run that can be resumed.
RUN_FILES = (CHECKPOINT, HYPERPARAMETERS, TRAIN_CSV, VALIDATION_CSV, TOKENIZER, "best", "final", TENSORBOARD)
LOCK = ".lock"  # the folder's lock file (`locked`): left behind by every run, it is no one's work


def holds_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in RUN_FILES[:2])


def _held(run_dir: Path) -> list[str]:
    """What a folder holds (folders with a trailing /), its lock file aside."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir() if p.name != LOCK)


def check_new_run_dir(run_dir: Path, overwrite: bool) -> None:
    """A new run starts in a missing or empty folder: it never writes over, or deletes, what it did not write.

    With `overwrite`, a former run's files are replaced (`clear_run`) and anything else is kept.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"`output_dir` {run_dir}: that is a file, not a folder; choose a folder")
    held = _held(run_dir)
    if not held or overwrite:
        return
    listing = ", ".join(held[:6]) + (f" and {len(held) - 6} more" if len(held) > 6 else "")
    if any(name.rstrip("/") in RUN_FILES for name in held):
        resume = f"continue it with `resume` {run_dir}, " if holds_run(run_dir) else ""
        raise RunFolderError(f"`output_dir` {run_dir} already holds a run ({listing}): {resume}replace it with "
                             "`overwrite`, or choose another `output_dir`")
    raise RunFolderError(f"`output_dir` {run_dir} already holds files no run wrote ({listing}): a new run starts "
                         "in an empty folder; choose another `output_dir` (`overwrite` would keep them beside the "
                         "run)")


def clear_run(run_dir: Path) -> None:
    """Remove an old run's files (--overwrite), and the temporary copies an interrupted write left of them;
    anything else in the folder stays."""
    for path in run_dir.iterdir():
        if path.name.split(".tmp-")[0].split(".old-")[0] in RUN_FILES:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock while a run writes it: a second run into the same folder stops at once."""
    lock = FileLock(run_dir / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout as err:
        raise RunFolderError(
            f"{run_dir}: another training run is writing this folder (its lock {run_dir / LOCK} is held); "
            "wait for it to finish, or choose another `output_dir`"
        ) from err
    try:
        yield
    finally:
        lock.release()


def write_hyperparameters(run_dir: Path, info: dict[str, Any]) -> None:
    write_atomic(run_dir / HYPERPARAMETERS, json.dumps(info, indent=2, sort_keys=True))


def record_changes(run_dir: Path, changes: list[dict[str, Any]]) -> None:
    """Append settings a resumed run changed (each with the epoch and step it changed at) to the hyperparameters."""
    path = run_dir / HYPERPARAMETERS
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.setdefault("changes_on_resume", []).extend(changes)
    write_hyperparameters(run_dir, info)


def write_csv(rows: list[dict], path: Path) -> None:
    """The rows as a CSV (atomically); no rows, no file."""
    if not rows:
        path.unlink(missing_ok=True)
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) if k != "epoch" else int(v) for k, v in row.items()} for row in csv.DictReader(f)]


def save_model_dir(model, tokenizer, path: Path, info: dict) -> None:
    """`save_pretrained` model + tokenizer into `path`, replacing an older copy only once the new one is whole."""
    with atomic_path(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "training_info.json").write_text(json.dumps(info, indent=2))


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
