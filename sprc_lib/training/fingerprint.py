"""What a run was trained on, by content: its annotation files and its starting weights.

A resumed run may find its data or its weights at another path (moved, copied to another machine);
it may not find other data or other weights there. Paths are compared by what they hold, so a moved
copy is accepted and a different dataset at the same path (or at a new one) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sprc_lib.data.records import read_json
from sprc_lib.data.schema import (
    FASHIONIQ_CATEGORIES,
    cirr_caption_path,
    cirr_split_path,
    fashioniq_caption_path,
    fashioniq_split_path,
)
from sprc_lib.model.fingerprint import sha256, weights_fingerprint
from sprc_lib.training.config import SettingError

SPLITS = ("train", "val")  # what training and its validation read


def data_files(dataset: str, root: Path) -> list[Path]:
    if dataset == "CIRR":
        return [p for s in SPLITS for p in (cirr_split_path(root, s), cirr_caption_path(root, s))]
    return [p for c in FASHIONIQ_CATEGORIES for s in SPLITS
            for p in (fashioniq_split_path(root, c, s), fashioniq_caption_path(root, c, s))]


def data_fingerprint(dataset: str, data_path: str | Path) -> dict[str, dict[str, Any]]:
    """Each annotation file a run reads (by its path inside the data folder): its record count and SHA-256."""
    root = Path(data_path)
    return {str(path.relative_to(root)): {"records": len(read_json(path, "annotation file")),
                                          "sha256": sha256(path)}
            for path in data_files(dataset, root)}


def check_same_data(saved: dict[str, dict[str, Any]], dataset: str, data_path: str | Path) -> None:
    """Refuse to resume on other data than the run's (a SettingError naming the files that differ)."""
    now = data_fingerprint(dataset, data_path)
    differ = [name for name in saved if saved[name] != now.get(name)]
    if not differ:
        return
    details = "; ".join(f"{name}: {now[name]['records']} records" + (
        f", the run's {saved[name]['records']}" if now[name]["records"] != saved[name]["records"]
        else ", as many as the run's, other contents") for name in differ[:3])
    raise SettingError(f"`data_path` {data_path}: not the data this run was trained on ({details}). A resumed run "
                       "goes on with its own data: pass the folder that holds it, or start a new run on this data")


def check_same_weights(saved: dict[str, str], model_path: str) -> None:
    """Refuse `--model-path` on resume unless it holds the weights the run started from."""
    if weights_fingerprint(model_path) != saved:
        raise SettingError(f"`model_path` {model_path}: not the weights this run started from (their contents "
                           "differ); drop the flag to resume, or start a new run from these weights")
