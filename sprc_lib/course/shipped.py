"""The tiny track's weights, shipped inside the package so that a fresh machine starts in seconds.

Pretraining the tiny BLIP-2 and training one tiny SPRC per toy dataset take minutes on a CPU; a Colab
session that is new every day would repeat them before its first idea. `make models` trains them
from the toy data (the recipe in `training.pretrain` and `training.recipes`) only with `RETRAIN=1`;
`make tiny-weights` retrains and ships what it trained here, stamped with the toy data it learned from.
A machine whose toy data has the same stamp copies these folders instead of training; any other toy data
(another seed, another size, a changed generator) is trained on. Training on another CPU gives other
weights (floating point differs, and training amplifies it), so these files are the course's reference:
its numbers (`course.reference`) come from them, and a retraining is checked against a measured band.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from sprc_lib.data.schema import CIRR_DIR, FASHIONIQ_DIR
from sprc_lib.data.toy import MARKER, PRETRAINING
from sprc_lib.training.tiny_layout import model_folder, model_names

SHIPPED = Path(__file__).parent / "tiny_weights"  # tiny-blip2/, CIRR/, FashionIQ/, CIRR-reranker/, FashionIQ-reranker/
STAMP = "toy_data.sha256"  # in each shipped folder: the toy data it was trained on


def toy_stamp(root: str | Path) -> str:
    """A digest of the toy data's annotations, splits, pretraining captions and a few images: what training reads."""
    root = Path(root)
    summary = json.loads((root / MARKER).read_text())
    digest = hashlib.sha256(json.dumps({k: summary[k] for k in ("seed", "size", "cirr", "fashioniq")}).encode())
    files = sorted(p for folder in (CIRR_DIR, FASHIONIQ_DIR) for p in (root / folder).rglob("*.json"))
    images = sorted(p for folder in (CIRR_DIR, FASHIONIQ_DIR) for p in (root / folder).rglob("*.png"))
    for path in [root / PRETRAINING, *files, *images[:: max(1, len(images) // 24)]]:
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def shipped(name: str, root: str | Path) -> Path | None:
    """The shipped folder `name` if it was trained on exactly this toy data, else None."""
    folder = SHIPPED / name
    stamp = folder / STAMP
    return folder if stamp.is_file() and stamp.read_text().strip() == toy_stamp(root) else None


def is_shipped(name: str, folder: str | Path) -> bool:
    """Whether `folder` holds the shipped weights of `name` (the same bytes), not a local retraining."""
    weights = Path(folder) / "model.safetensors"
    return weights.is_file() and weights.read_bytes() == (SHIPPED / name / "model.safetensors").read_bytes()


def copy_shipped(name: str, root: str | Path, dest: str | Path) -> bool:
    """Copy the shipped `name` to `dest` when it fits the toy data under `root`; False when it does not."""
    folder = shipped(name, root)
    if folder is None:
        return False
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)  # what is there is unfinished: callers copy only when a model is missing
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(folder, partial, ignore=shutil.ignore_patterns(STAMP))
    partial.replace(dest)  # a stopped copy never looks like a finished model
    print(f"{name}: copied the shipped tiny weights (trained on this toy data) to {dest}")
    return True


def ship(root: str | Path, sources: dict[str, Path]) -> list[Path]:
    """`make tiny-weights`: replace the shipped folders by `sources` (name -> trained folder), stamped with `root`."""
    stamp, written = toy_stamp(root), []
    for name, source in sources.items():
        dest = SHIPPED / name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(source, dest)
        (dest / STAMP).write_text(stamp + "\n")
        written.append(dest)
    return written


def main(argv: list[str]) -> int:
    """`make tiny-weights`: ship what `make models RETRAIN=1` trained under TOY_ROOT (`argv[0]`)."""
    root = Path(argv[0])
    sources = {name: model_folder(name, root) for name in model_names()}
    for path in ship(root, sources):
        print(f"shipped {path}")
    return 0
