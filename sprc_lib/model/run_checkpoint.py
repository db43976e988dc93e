"""A training run's `checkpoint.pt`: the one description of what it holds, with its writer and its readers.

The trainer writes it (`training.checkpoint`) and resumes from it; `--model-path` and `load_model` read the
model in it. It is one dict of tensors and plain data:

    config         the run's resolved settings (`training.config`)
    model_config   the model's configuration, to rebuild it
    model          its state dict, less the frozen weights `frozen_from` names
    frozen_from    where those come back from, checked by content (None: every tensor is saved)
    optimizer  scheduler  scaler   their state dicts
    rng            one random state per process
    position       epoch, step_in_epoch, global_step
    world          world_size, global_batch_size, samples_in_epoch (so another number of processes can resume)
    running        the epoch's running sums
    best           the best validation so far (None before the first)
    fingerprint    the data and the starting weights, by content
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sprc_lib.errors import CheckpointError
from sprc_lib.files import atomic_path
from sprc_lib.model.lavis import read_checkpoint

FILE = "checkpoint.pt"
KEYS = ("config", "model_config", "model", "frozen_from", "optimizer", "scheduler", "scaler", "rng", "position",
        "world", "running", "best", "fingerprint")
_NEEDED = {"config", "model_config", "model", "position"}  # what every version of the file holds


def write(state: dict[str, Any], path: Path) -> None:
    """Save a run's state, every key of the format and no other, whole or not at all (written beside, renamed)."""
    if set(state) != set(KEYS):
        raise ValueError(f"a run checkpoint holds {KEYS}; got {sorted(state)}")
    tensors = [v for v in _leaves(state) if isinstance(v, torch.Tensor)]
    with atomic_path(path, size=sum(t.numel() * t.element_size() for t in tensors)) as tmp:
        torch.save(state, tmp)


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def is_run_checkpoint(saved: object) -> bool:
    """Whether a `.pt` file's contents are a run's checkpoint (not a released LAVIS file)."""
    return isinstance(saved, dict) and set(saved) >= _NEEDED


def read(path: str | Path, mmap: bool = True) -> dict[str, Any]:
    """A run's checkpoint (`mmap`: memory-mapped, see `read_checkpoint`); anything else is a CheckpointError."""
    saved = read_checkpoint(path, mmap=mmap)
    if not is_run_checkpoint(saved):
        raise CheckpointError(f"{path} is not a training checkpoint of this library (a released model goes to "
                              "`model_path` instead)")
    return saved


def model_parts(saved: dict[str, Any]) -> tuple[dict, dict[str, torch.Tensor], dict | None]:
    """(model configuration, state dict, where the frozen weights it leaves out come from) of a checkpoint."""
    return saved["model_config"], saved["model"], saved.get("frozen_from")
