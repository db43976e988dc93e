"""What a notebook needs to start, for its mode: the data, the cache, the weights, the device, the locations.

Every notebook calls `setup()` once, in the cell after its parameters, so the tiny and full tracks are
set up the same way in all of them. Full mode reads every location from the environment variables in
`LOCATIONS` (the README's "Full mode" table lists the same); CI runs the full track on stand-ins in
the real formats by setting them, and nothing else differs between that run and a real one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from sprc_lib.course.toy_track import ensure_toy, tiny_model, tiny_reranker
from sprc_lib.data.cirr import CIRRDataset
from sprc_lib.data.errors import DataError
from sprc_lib.data.fashioniq import FashionIQDataset
from sprc_lib.data.schema import FASHIONIQ_CATEGORIES, check_root
from sprc_lib.data.unpack import unpack_dataset
from sprc_lib.env import map_large_blocks, on_colab, pick_device
from sprc_lib.errors import UserError
from sprc_lib.evaluation.context import EvalContext, EvalSettings, make_eval_context
from sprc_lib.model import SPRCConfig, SPRCModel
from sprc_lib.model.loading import BLIP2_RETRIEVAL, blip2_sizes, load_model, load_reranker
from sprc_lib.model.rerank import RerankerModel
from sprc_lib.model.tokenizer import load_tokenizer
from sprc_lib.paths import data_root
from sprc_lib.training.pretrain import read_pairs
from sprc_lib.training.tiny_layout import TINY_BLIP2

MODES = ("tiny", "full")
SHORT = {"CIRR": "cirr", "FashionIQ": "fiq"}  # the released files' names: sprc_cirr.pt, sprc_fiq.pt

LOCATIONS = {  # full mode's inputs: the variable and what it holds
    "SPRC_DATA": "the folder holding cirr_dataset/ and fashionIQ_dataset/ (default: <home>/data)",
    "SPRC_BLIP2": f"the BLIP-2 retrieval checkpoint SPRC starts from, hub id or folder (default: {BLIP2_RETRIEVAL})",
    "SPRC_CIRR_CHECKPOINT": "the authors' sprc_cirr.pt (default: MyDrive/sprc/ on Colab, else <data>/checkpoints/)",
    "SPRC_FIQ_CHECKPOINT": "the authors' sprc_fiq.pt (default: beside sprc_cirr.pt)",
    "SPRC_CIRR_MODEL": "a trained CIRR model folder: a run's best/ or a converted sprc_cirr (notebooks 00, 03, 05)",
    "SPRC_FIQ_MODEL": "the same for FashionIQ (notebook 05)",
    "SPRC_CIRR_RERANKER": "a trained CIRR re-ranker folder: a `train-reranker` run's best/ (notebook 07)",
    "SPRC_FIQ_RERANKER": "the same for FashionIQ (notebook 07)",
    "SPRC_MAX_STEPS": "a bound on every training run the notebooks start (CI's stand-in run); unset for a real run",
    "SPRC_MAX_QUERIES": "a bound on the queries notebook 07 re-ranks (CI's stand-in run); unset for a real run",
    "SPRC_SKIP_MISSING": "1: leave out the images a dataset copy lacks, and the queries that use them (the default in "
                         "full mode: real FashionIQ copies always lack some); 0: stop at the first one",
    "SPRC_STANDIN_WEIGHTS": "1: the models are random stand-ins (`make rehearse`): every cell runs, none claims a "
                            "model's quality; unset for trained models",
}
COLAB_CHECKPOINTS = Path("/content/drive/MyDrive/sprc")


class CourseStop(UserError):
    """A notebook cannot go on without something only the user can supply; shown as its message alone."""

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines instead of a traceback
        return [f"STOPPED: {self}"]


def course_mode() -> str:
    """`tiny` (any CPU, minutes) unless `SPRC_MODE=full` asks for the paper-scale track."""
    mode = os.environ.get("SPRC_MODE", "tiny").strip().lower()
    if mode not in MODES:
        raise ValueError(f"SPRC_MODE={mode!r}: choose one of {MODES}")
    return mode


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def _bound(name: str) -> int | None:
    """A positive whole number from variable `name`, None when unset (SPRC_MAX_STEPS, SPRC_MAX_QUERIES)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise CourseStop(f"{name}={value!r}: give a whole number of at least 1, or unset it")
    return int(value)


def _switch(name: str, default: bool) -> bool:
    """Variable `name` as 1 or 0 (`default` when unset)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if value not in ("0", "1"):
        raise CourseStop(f"{name}={value!r}: give 1 or 0, or unset it")
    return value == "1"


@dataclass(frozen=True)
class CourseSetup:
    """A notebook's mode and what follows from it."""

    mode: str
    data: Path  # the folder holding cirr_dataset/ and fashionIQ_dataset/
    cache: Path  # the frozen-ViT feature cache (on local disk, never a network drive)
    preset: str  # the recipe's scale: tiny, or the paper's (blip2-vitg)
    weights: str  # where SPRC training starts: the tiny BLIP-2 or SPRC_BLIP2
    device: torch.device
    checkpoints: dict[str, Path] = field(default_factory=dict)  # dataset -> the authors' released file
    models: dict[str, Path | None] = field(default_factory=dict)  # dataset -> a trained model folder, if given
    rerankers: dict[str, Path | None] = field(default_factory=dict)  # dataset -> a trained re-ranker, if given
    max_steps: int | None = None  # a bound on each training run (SPRC_MAX_STEPS)
    max_queries: int | None = None  # a bound on the queries a second stage scores (SPRC_MAX_QUERIES)
    skip_missing: bool = False  # leave out images the data lacks, and their queries (SPRC_SKIP_MISSING)
    standin_weights: bool = False  # random stand-in models: no claim about quality (SPRC_STANDIN_WEIGHTS)

    def context(self, model: SPRCModel, tokenizer: Any) -> EvalContext:
        """`model` ready to evaluate on this set-up's device, with its feature cache."""
        where = EvalSettings(feature_cache=str(self.cache), skip_missing=self.skip_missing)
        return make_eval_context(model, tokenizer, where, device=self.device)

    def locations(self) -> dict[str, object]:
        """What each variable of `LOCATIONS` amounts to here (None where this mode does not use it)."""
        return {"SPRC_DATA": self.data, "SPRC_BLIP2": self.weights,
                "SPRC_CIRR_CHECKPOINT": self.checkpoints.get("CIRR"),
                "SPRC_FIQ_CHECKPOINT": self.checkpoints.get("FashionIQ"),
                "SPRC_CIRR_MODEL": self.models.get("CIRR"), "SPRC_FIQ_MODEL": self.models.get("FashionIQ"),
                "SPRC_CIRR_RERANKER": self.rerankers.get("CIRR"), "SPRC_FIQ_RERANKER": self.rerankers.get("FashionIQ"),
                "SPRC_MAX_STEPS": self.max_steps, "SPRC_MAX_QUERIES": self.max_queries,
                "SPRC_SKIP_MISSING": int(self.skip_missing), "SPRC_STANDIN_WEIGHTS": int(self.standin_weights)}

    def bounded(self, steps: int) -> int:
        """`steps`, or fewer where SPRC_MAX_STEPS bounds the run (CI's stand-in run of the full track)."""
        return min(steps, self.max_steps) if self.max_steps else steps

    def bounded_queries(self, queries: int | None) -> int | None:
        """`queries` (None: all), or fewer where SPRC_MAX_QUERIES bounds them (CI's stand-in run of the full track)."""
        if self.max_queries is None:
            return queries
        return self.max_queries if queries is None else min(queries, self.max_queries)

    def has_trained(self, dataset: str) -> bool:
        """Whether `trained(dataset)` has a model to give (always in tiny mode)."""
        return self.mode == "tiny" or self.models.get(dataset) is not None

    def caption_pairs(self) -> list[tuple[Path, str]]:
        """(image, text) pairs for BLIP-2's image-text retrieval (notebook 02), one text per image: the tiny
        BLIP-2's toy captions; in full mode the validation targets of CIRR and FashionIQ with their
        modification texts, which describe the target only in part (BLIP-2 never saw such texts)."""
        if self.mode == "tiny":
            return read_pairs(self.data)
        cirr = CIRRDataset(self.need_data("CIRR"), "val", "relative")
        fiq = FashionIQDataset(self.need_data("FashionIQ"), "val", list(FASHIONIQ_CATEGORIES), "relative",
                               skip_missing=True)
        pairs = [(cirr.image_path(t.target), t.caption) for t in cirr.triplets]
        pairs += [(fiq.image_path(t.target), " and ".join(t.captions)) for t in fiq.triplets]
        return list(dict(reversed(pairs)).items())[::-1]  # the first text of each image

    def sizes(self, vocab_size: int | None = None) -> SPRCConfig:
        """The model sizes of the BLIP-2 the course starts from: what a released `.pt` (no sizes of its own)
        is loaded with."""
        return blip2_sizes(self.weights, vocab_size)

    def unpack(self, archives: dict[str, str | Path], skip_missing: bool = False) -> None:
        """Unpack each dataset's archive into the data folder and check it (`unpack_dataset`); a missing or
        wrong archive is a stop that names it and says what to do, not a traceback."""
        for dataset, archive in archives.items():
            try:
                unpack_dataset(archive, self.data, dataset, skip_missing=skip_missing)
            except DataError as err:
                raise CourseStop(f"{err}. Fix the path in ARCHIVES (parameters cell), then run this cell "
                                 "again") from None

    def need_data(self, dataset: str) -> Path:
        """The data folder, if it holds `dataset`; else a stop that says where to get it and put it."""
        try:
            check_root(self.data, dataset)
        except DataError as err:
            raise CourseStop(f"{err}. Get {dataset} as data/README.md says (or unpack an archive with "
                             f"`python -m sprc_lib unpack-data ARCHIVE --out {self.data}`), or set SPRC_DATA to "
                             "the folder that holds it, then run this cell again") from None
        return self.data

    def released(self, dataset: str) -> Path:
        """The authors' released file for `dataset`, or a stop that says where to get it and put it."""
        path = self.checkpoints[dataset]
        if not path.is_file():
            raise CourseStop(f"{path}: not found. Download sprc_{SHORT[dataset]}.pt (links in notebook 06, "
                             f"section 1) and put it there, or set SPRC_{SHORT[dataset].upper()}_CHECKPOINT to "
                             "where it is, then run this cell again")
        return path

    def trained(self, dataset: str, beside: SPRCModel | None = None) -> tuple[SPRCModel, Any]:
        """A trained SPRC for `dataset` and its tokenizer: the tiny one (trained on first use), or the folder
        SPRC_<dataset>_MODEL names; a stop that says what to set when there is none. `beside`: a model already
        loaded whose frozen ViT this one uses when the two are the same (models trained from one BLIP-2 are)."""
        if self.mode == "tiny":
            return tiny_model(dataset, self.data)
        folder = self.models.get(dataset)
        variable = f"SPRC_{SHORT[dataset].upper()}_MODEL"
        if folder is None:
            raise CourseStop(f"no trained {dataset} model: set {variable} to a run's best/ (notebook 04) or to the "
                             f"converted sprc_{SHORT[dataset]} folder (notebook 06), then run this cell again")
        if not folder.exists():
            raise CourseStop(f"{variable}={folder}: no such folder; point it at a saved model folder")
        return load_model(folder, vit_from=beside).eval(), load_tokenizer(folder)

    def trained_reranker(self, dataset: str, beside: SPRCModel | None = None) -> tuple[RerankerModel, Any]:
        """A trained SPRC² re-ranker for `dataset` and its tokenizer: the tiny one, or the folder
        SPRC_<dataset>_RERANKER names; a stop that says what to set when there is none. `beside`: the stage-1
        model it re-ranks, whose frozen ViT it uses when the two are the same (one in memory, not two)."""
        if self.mode == "tiny":
            return tiny_reranker(dataset, self.data)
        folder = self.rerankers.get(dataset)
        variable = f"SPRC_{SHORT[dataset].upper()}_RERANKER"
        if folder is None or not folder.exists():
            where = "is not set" if folder is None else f"={folder}: no such folder"
            raise CourseStop(f"{variable} {where}: train a re-ranker (`python -m sprc_lib train-reranker --dataset "
                             f"{dataset} --stage1-model <your SPRC model> --save-training --save-best`, notebook 07 "
                             f"section 7) and set {variable} to its run's best/, then run this cell again")
        return load_reranker(folder, vit_from=beside).eval(), load_tokenizer(folder)


def setup(mode: str | None = None, data_path: str | Path | None = None) -> CourseSetup:
    """The set-up for `mode` (default: `course_mode()`).

    Tiny: the toy data and the pretrained tiny BLIP-2 (made if missing), and one CPU thread: on a busy
    2-core machine a tiny-model step took several times longer with two threads competing for the
    cores than with one. Full: every location from `LOCATIONS`; `data_path` overrides SPRC_DATA.
    """
    mode = mode or course_mode()
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {MODES}")
    hf_logging.disable_progress_bar()  # transformers' "Loading weights" bars: noise in a lesson's output
    map_large_blocks()  # a notebook loads and frees model after model: freed tensors leave the kernel at once
    max_steps, max_queries = _bound("SPRC_MAX_STEPS"), _bound("SPRC_MAX_QUERIES")
    skip_missing = _switch("SPRC_SKIP_MISSING", default=mode == "full")
    standins = _switch("SPRC_STANDIN_WEIGHTS", default=False)
    if mode == "tiny":
        data = ensure_toy()
        torch.set_num_threads(1)
        return CourseSetup(mode, data, data / "cache", "tiny", str(data / TINY_BLIP2), pick_device(),
                           max_steps=max_steps, max_queries=max_queries, skip_missing=skip_missing,
                           standin_weights=standins)
    data = Path(data_path) if data_path else data_root()
    default_dir = COLAB_CHECKPOINTS if on_colab() else data / "checkpoints"
    cirr = _env_path("SPRC_CIRR_CHECKPOINT") or default_dir / "sprc_cirr.pt"
    checkpoints = {"CIRR": cirr, "FashionIQ": _env_path("SPRC_FIQ_CHECKPOINT") or cirr.parent / "sprc_fiq.pt"}
    models = {dataset: _env_path(f"SPRC_{short.upper()}_MODEL") for dataset, short in SHORT.items()}
    rerankers = {dataset: _env_path(f"SPRC_{short.upper()}_RERANKER") for dataset, short in SHORT.items()}
    weights = os.environ.get("SPRC_BLIP2", "").strip() or BLIP2_RETRIEVAL
    return CourseSetup(mode, data, data / "cache", "blip2-vitg", weights, pick_device(), checkpoints, models,
                       rerankers, max_steps, max_queries, skip_missing, standins)
