"""Where the tiny track keeps its models under a toy data root: the one table that the trainer, the courseware,
the shipped weights and the tests all read.

    <root>/tiny-blip2/                 the pretrained tiny BLIP-2 (what every tiny SPRC starts from)
    <root>/runs/<dataset>/best/        the tiny SPRC of CIRR or FashionIQ (a run folder's best model)
    <root>/runs/<dataset>-reranker/best/   the tiny SPRC² re-ranker of that dataset
"""

from __future__ import annotations

from pathlib import Path

from sprc_lib.data.schema import DATASETS

TINY_BLIP2 = "tiny-blip2"


def reranker_name(dataset: str) -> str:
    """The tiny re-ranker's name: its run folder under runs/, and its shipped folder."""
    return f"{dataset}-reranker"


def model_names() -> list[str]:
    """Every tiny model, in the order they are trained (each after what it starts from)."""
    return [TINY_BLIP2, *[name for d in DATASETS for name in (d, reranker_name(d))]]


def run_dir(name: str, root: str | Path) -> Path:
    """The run folder of tiny SPRC `name` (a dataset) or re-ranker (`reranker_name(dataset)`)."""
    return Path(root) / "runs" / name


def model_folder(name: str, root: str | Path) -> Path:
    """Where tiny model `name` lives: the tiny BLIP-2's folder, or a run's best/."""
    return Path(root) / TINY_BLIP2 if name == TINY_BLIP2 else run_dir(name, root) / "best"
