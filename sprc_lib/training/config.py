"""The one declaration of a training run's settings, and the one function that resolves them.

Each field of `TrainConfig` is declared once, with its default, its help and its rule on resume:

- `FIXED`: part of what the run *is* (data, model, recipe, seed, precision). A resumed run keeps
  the saved value; giving another one stops with a message that names the setting.
- `APPLIED`: how or where the run goes on (paths, workers, device, what gets saved). A value given
  on resume is used from there on and recorded, with the epoch and step it changed at, in the
  run's `training_hyperparameters.json`; a value not given comes from the run.

A field declared with default None is decided by `resolve` from the others: the data folder and the
preset from each other, the starting weights from the preset, the recipe's fields from the dataset's
recipe, and a re-ranker run's stage-1 model, top K and fusion weight. `resolve` returns the settings
with every one of those decided and every value checked; the run (`training.build`), the loop, the
step and the evaluation commands read that object only.

The `train` command builds its flags from these fields (`add_flags`) and turns the parsed flags
back into settings (`given_settings`).
"""

from __future__ import annotations

import argparse
import math
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sprc_lib.data.schema import DATASETS, check_root
from sprc_lib.errors import MissingFileError, UserError
from sprc_lib.paths import data_root, toy_root
from sprc_lib.training.recipes import Recipe, recipe_for
from sprc_lib.training.reports import REPORT_TO, summary_writer
from sprc_lib.training.tiny_layout import TINY_BLIP2, model_folder

FIXED, APPLIED = "fixed", "applied"


class SettingError(UserError, ValueError):
    """A setting that cannot be used as given (e.g. a fixed one changed on resume); the message says what to do."""


def dataset_name(value: str) -> str:
    """'CIRR' / 'FashionIQ' in any case, as the seed's commands spell them ('fashionIQ' appears in its README)."""
    for name in DATASETS:
        if value.lower() == name.lower():
            return name
    raise argparse.ArgumentTypeError(f"--dataset must be {' or '.join(DATASETS)}, got {value!r}")


def _setting(default: Any, help: str, resume: str = FIXED, **cli: Any) -> Any:
    return field(default=default, metadata={"help": help, "resume": resume, "cli": cli})


@dataclass(frozen=True)
class TrainConfig:
    """A run's settings: as given (None: `resolve` decides), or resolved (every one decided and checked)."""

    dataset: str | None = _setting(None, "CIRR or FashionIQ (required)", type=dataset_name)
    data_path: str | None = _setting(None, "folder with cirr_dataset/ and fashionIQ_dataset/ (default: data/toy "
                              "for the tiny preset, else data/ or $SPRC_DATA)", APPLIED)
    preset: str | None = _setting(None, "model sizes: tiny (CPU minutes) or blip2-vitg (the paper's); default: tiny on "
                           "toy data, else blip2-vitg", choices=("tiny", "blip2-vitg"))
    model_path: str | None = _setting(None, "initial weights: a BLIP-2 folder or hub id, a saved SPRC model, a "
                                      "released .pt (default: Salesforce/blip2-itm-vit-g, or <data-path>/tiny-blip2)")
    tokenizer: str | None = _setting(None, "tokenizer folder or hub id (default: beside the initial weights)")
    output_dir: str | None = _setting(None, "run folder (default: runs/<dataset>_<preset>_<time>); a resumed run "
                                      "writes into the folder it resumes")
    num_epochs: int | None = _setting(None, "epochs to train (CIRR 50, FashionIQ 30)")
    learning_rate: float | None = _setting(None, "OneCycle peak learning rate (CIRR 1e-5, FashionIQ 2e-5)")
    batch_size: int | None = _setting(None, "triplets per step and process (128)")
    loss_rtc: float | None = _setting(None, "RTC loss weight (CIRR 0.4, FashionIQ 1)")
    loss_align: float | None = _setting(None, "alignment loss weight (CIRR 0.4, FashionIQ 1)")
    validation_frequency: int | None = _setting(None, "validate every N epochs (1)", APPLIED)
    transform: str | None = _setting(None, "image preprocessing (targetpad)", choices=("targetpad", "squarepad"))
    target_ratio: float | None = _setting(None, "TargetPad ratio (1.25; targetpad only)")
    schedule_over_run: bool = _setting(False, "lay CIRR's OneCycle schedule over the epochs run instead of the "
                                       "reference's 80")
    skip_missing: bool = _setting(False, "drop missing images and every triplet that uses one (real FashionIQ "
                                  "copies miss some); what is dropped is reported and recorded in the run folder")
    seed: int = _setting(0, "seed of the weights' random parts, the batch order and dropout")
    precision: str = _setting("auto", "autocast: auto (bf16/fp16 on a GPU, fp32 on a CPU), fp32, fp16, bf16",
                              choices=("auto", "fp32", "fp16", "bf16"))
    global_negatives: bool = _setting(False, "under torchrun: contrast each query with the targets of all "
                                      "processes, not only its own")
    micro_batch: int | None = _setting(None, "compute each step in micro-batches of N triplets with the gradient "
                                       "cache: the whole batch's loss and gradients, one micro-batch's memory "
                                       "(default: the whole batch at once)", APPLIED)
    gradient_checkpointing: bool = _setting(False, "recompute the Q-Former's activations in the backward instead of "
                                            "keeping them: less memory, more time", APPLIED)
    num_workers: int = _setting(2, "data-loading worker processes", APPLIED)
    device: str = _setting("auto", "auto, cpu, cuda, cuda:1, ...", APPLIED)
    feature_cache: str | None = _setting(None, "folder for the frozen-ViT feature cache", APPLIED)
    save_training: bool = _setting(False, "write model folders (final/, best/)", APPLIED)
    save_best: bool = _setting(False, "keep the best model by the reference's criterion (needs --save-training)",
                               APPLIED)
    checkpoint_every: int = _setting(0, "also checkpoint every N steps (0: at epoch ends only)", APPLIED)
    auxiliary_prompt: str = _setting("shared", "the RTC pass's prompt and the alignment loss's anchor: shared (the "
                                     "authors' code, one learned prompt) or per-sample (the paper's Eq. 2-3, one "
                                     "learned prompt per training triplet, SPRC issue #17: an ablation in one "
                                     "process without --micro-batch, whose memory and checkpoint grow with the "
                                     "training set)",
                                     choices=("shared", "per-sample"))
    reranker: bool = _setting(False, "train the SPRC² re-ranker instead of SPRC (what `train-reranker` sets)")
    stage1_model: str | None = _setting(None, "re-ranker runs: the SPRC model whose top K validation re-orders "
                                        "(a run's best/ or final/, or a released sprc_*.pt; default on toy data: "
                                        "<data-path>/runs/<dataset>/best, the tiny track's)", APPLIED)
    rerank_top_k: int | None = _setting(None, "re-ranker runs: candidates re-ordered per query at validation "
                                        "(default: the authors' CIRR 200, FashionIQ 40; tiny: CIRR 20, FashionIQ 40)",
                                        APPLIED)
    rerank_fuse: float | None = _setting(None, "re-ranker runs: validation orders the top K by ALPHA x stage 1 + "
                                         "(1 - ALPHA) x the re-ranker (default: the authors' 0; tiny: 0.5)", APPLIED)
    report_to: str = _setting("none", "also write the CSVs' scalars (each step's losses and learning rate, each "
                              "epoch's and validation's rows) for TensorBoard, into <run folder>/tensorboard/ "
                              "(needs `pip install tensorboard`)", APPLIED, choices=REPORT_TO)

    @property
    def recipe(self) -> Recipe:
        """The dataset's recipe for this preset, with the recipe fields this config sets."""
        return recipe_for(self.dataset, self.preset).with_overrides(**{n: getattr(self, n) for n in RECIPE_FIELDS})


RECIPE_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name in {r.name for r in fields(Recipe)})


def _field(name: str):
    return next(f for f in fields(TrainConfig) if f.name == name)


def resume_rule(name: str) -> str:
    """FIXED or APPLIED: what `--resume` does with a new value of this setting."""
    return _field(name).metadata["resume"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, names: typing.Iterable[str] | None = None,
              help: dict[str, str] | None = None) -> None:
    """One flag per setting (all, or `names`), named as the seed's commands name them.

    Every flag's parsed default is None ("not given"), so a resumed run can tell what was asked for.
    """
    hints = typing.get_type_hints(TrainConfig)
    chosen = set(names) if names is not None else None
    for f in fields(TrainConfig):
        if chosen is not None and f.name not in chosen:
            continue
        text = (help or {}).get(f.name, f.metadata["help"])
        if f.default is not None and "default" not in text:
            text += f" (default: {f.default})"
        cli = dict(f.metadata["cli"])
        kind_of = [t for t in typing.get_args(hints[f.name]) if t is not type(None)] or [hints[f.name]]
        if kind_of[0] is bool:
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            cli.setdefault("type", kind_of[0])
            parser.add_argument(_flag(f.name), default=None, help=text, **cli)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a command line gave (flags left out are absent, not defaulted)."""
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)
            if getattr(args, f.name, None) is not None}


@dataclass(frozen=True)
class Change:
    """A setting a resumed run applied: from what, to what (recorded in the run's hyperparameters file)."""

    setting: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"`{self.setting}` {self.old!r} -> {self.new!r}"


def resolve(config: TrainConfig) -> TrainConfig:
    """A new run's settings: `config` with every default decided and every value checked.

    Resolving settings already resolved gives them back unchanged.
    """
    given = _given(asdict(config))
    _check_values(given)
    return _decided(config)


def resolve_resume(given: dict[str, Any], saved: dict[str, Any], run_dir: str) -> tuple[TrainConfig, list[Change]]:
    """A resumed run's settings: the `saved` ones (resolved again, for a run saved before they were), with the
    APPLIED settings `given` taken over and returned as `Change`s; `run_dir`, the folder resumed, becomes
    the run's `output_dir`.

    A FIXED setting given with another value than the run's raises `SettingError` naming it (all of them at once).
    """
    given = _given(given)
    _check_values(given)
    known = {f.name for f in fields(TrainConfig)}
    base = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    if given.get("reranker", base.reranker) != base.reranker:  # the command, not a flag, says which model
        model, command = ("the SPRC² re-ranker", "train-reranker") if base.reranker else ("SPRC", "train")
        raise SettingError(f"{run_dir} trains {model}: resume it with `python -m sprc_lib {command} "
                           f"--resume {run_dir}`")
    base = replace(base, output_dir=run_dir)
    fixed, changes = [], []
    for name, new in given.items():
        old = getattr(base, name)
        if old is None and name in RECIPE_FIELDS:  # a run saved before its settings were resolved
            old = getattr(base.recipe, name)
        if new == old:
            continue
        if name == "output_dir":
            raise SettingError(f"`output_dir` {new}: a resumed run writes into its own folder ({run_dir}); leave "
                               "`output_dir` out to resume it there, or start a new run in another folder")
        if resume_rule(name) == FIXED:
            fixed.append(f"`{name}` {new!r} (the run has {old!r})")
        else:
            changes.append(Change(name, old, new))
    if fixed:
        raise SettingError(
            f"{'; '.join(fixed)}: fixed for a run, so a resumed run keeps its own. Leave it out to resume, "
            "or start a new run (another `output_dir`) to train with the new value."
        )
    return _decided(replace(base, **{c.setting: c.new for c in changes})), changes


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The settings given (a value of None is not given), each a known one."""
    unknown = sorted(set(values) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise SettingError(f"unknown training setting(s): {', '.join(unknown)}")
    return {k: v for k, v in values.items() if v is not None}


# The least value of each numeric setting, and the most where there is one.
_LEAST = {"num_epochs": 1, "batch_size": 1, "micro_batch": 1, "validation_frequency": 1, "num_workers": 0,
          "checkpoint_every": 0, "rerank_top_k": 1, "loss_rtc": 0.0, "loss_align": 0.0, "target_ratio": 1.0}
_MOST = {"rerank_fuse": (1.0, "give a weight between 0 (pure re-ranking) and 1")}


def _check_values(given: dict[str, Any]) -> None:
    """Each value given, on its own: the flags' mistakes are named before any folder is looked at."""
    if given.get("dataset", DATASETS[0]) not in DATASETS:
        raise SettingError(f"`dataset` {given['dataset']!r}: choose {' or '.join(DATASETS)}")
    for name, least in _LEAST.items():
        if name in given and given[name] < least:
            raise SettingError(f"`{name}` {given[name]}: must be at least {least}")
    for name, (most, what) in _MOST.items():
        if name in given and not 0.0 <= given[name] <= most:
            raise SettingError(f"`{name}` {given[name]}: {what}")
    if "learning_rate" in given and not given["learning_rate"] > 0:
        raise SettingError(f"`learning_rate` {given['learning_rate']}: must be above 0")
    if given.get("transform") == "squarepad" and "target_ratio" in given:
        raise SettingError("`target_ratio` only applies to `transform` targetpad")
    if given.get("report_to") == "tensorboard":
        summary_writer()  # a missing package stops here, not after the set-up
    if "device" in given:
        from sprc_lib.env import pick_device

        pick_device(given["device"])  # a device this machine lacks stops here, before any model loads


def _data_and_preset(data_path: str | None, preset: str | None, dataset: str) -> tuple[str, str]:
    """The defaults the seed's commands imply: toy data for the tiny preset, the tiny preset on toy data.

    The data folder is checked here, so a wrong path is named before any model loads (or is fetched).
    """
    from sprc_lib.data.toy import MARKER

    if data_path is None:
        data_path = str(toy_root() if preset == "tiny" else data_root())
    check_root(data_path, dataset)
    if preset is None:
        preset = "tiny" if (Path(data_path) / MARKER).is_file() else "blip2-vitg"
    return str(data_path), preset


def _base_weights(model_path: str | None, preset: str, data_path: str) -> str:
    """Where training starts: `model_path`, else BLIP-2 (the paper) or the pretrained tiny BLIP-2."""
    from sprc_lib.model.loading import BLIP2_RETRIEVAL

    if model_path:
        return model_path
    if preset != "tiny":
        return BLIP2_RETRIEVAL
    tiny = Path(data_path) / TINY_BLIP2
    if not (tiny / "config.json").is_file():
        raise MissingFileError(
            f"{tiny}: no pretrained tiny BLIP-2. The tiny track starts from one, as the paper starts from "
            f"BLIP-2: `python -m sprc_lib course --models-only --data-path {data_path}` puts the course's "
            f"shipped one there (seconds), `python -m sprc_lib pretrain-tiny --data-path {data_path}` "
            "pretrains one on this machine (minutes)."
        )
    return str(tiny)


def _stage1_model(stage1_model: str | None, dataset: str, preset: str, data_path: str) -> str:
    """The SPRC model a re-ranker run validates with: `stage1_model`, else the tiny track's on toy data."""
    if stage1_model:
        if not Path(stage1_model).exists():
            raise SettingError(f"`stage1_model` {stage1_model}: no such file or folder; pass the SPRC model "
                               "whose top K validation re-orders (a run's best/ or final/, or a released sprc_*.pt)")
        return stage1_model
    tiny = model_folder(dataset, data_path)
    if preset == "tiny" and (tiny / "config.json").is_file():
        return str(tiny)
    hint = f" (there is no tiny SPRC in {tiny}: `make models` puts the shipped one there)" if preset == "tiny" else ""
    raise SettingError("`stage1_model`: a re-ranker run validates by re-ordering an SPRC model's top K; pass that "
                       f"model (a run's best/ or final/, or a released sprc_*.pt){hint}")


def _decided(config: TrainConfig) -> TrainConfig:
    """`config` with every default decided from the settings it depends on, each rule checked as soon as what it
    reads is decided (so a mistake in the flags is named before a missing model)."""
    from sprc_lib.evaluation.rerank import default_fuse, default_top_k

    if config.dataset is None:
        raise SettingError("`dataset` is required (CIRR or FashionIQ)")
    _check_together(config)
    data_path, preset = _data_and_preset(config.data_path, config.preset, config.dataset)
    recipe = replace(config, data_path=data_path, preset=preset).recipe  # the dataset's, with the fields given
    settings = replace(config, data_path=data_path, preset=preset, **{n: getattr(recipe, n) for n in RECIPE_FIELDS})
    _check_decided(settings)
    model_path = _base_weights(config.model_path, preset, data_path)
    return replace(
        settings,
        model_path=model_path,
        tokenizer=config.tokenizer or model_path,  # a model's tokenizer is saved beside it
        rerank_top_k=default_top_k(config.dataset, preset) if config.rerank_top_k is None else config.rerank_top_k,
        rerank_fuse=default_fuse(preset) if config.rerank_fuse is None else config.rerank_fuse,
        stage1_model=_stage1_model(config.stage1_model, config.dataset, preset, data_path) if config.reranker
        else config.stage1_model,
    )


def _check_together(settings: TrainConfig) -> None:
    """The rules between the settings given, before any default is decided (no folder has been looked at yet)."""
    if settings.save_best and not settings.save_training:
        raise SettingError("`save_best` needs `save_training` (as in the seed's commands): nothing is saved otherwise")
    if settings.reranker and settings.micro_batch:
        raise SettingError("`micro_batch`: the gradient cache is SPRC's (its losses compare a whole batch); the "
                           "re-ranker trains without it, so lower `batch_size` instead")
    if settings.auxiliary_prompt == "per-sample" and settings.reranker:
        raise SettingError("`auxiliary_prompt` per-sample is SPRC's alignment; the re-ranker has no prompts")
    if settings.auxiliary_prompt == "per-sample" and settings.micro_batch:
        raise SettingError("`auxiliary_prompt` per-sample trains without the gradient cache: drop `micro_batch`, or "
                           "lower `batch_size`")
    if settings.reranker and settings.global_negatives:
        raise SettingError("`global_negatives` is SPRC's; the re-ranker mines its hard negatives within each "
                           "process's batch, as the authors do")


def _check_decided(settings: TrainConfig) -> None:
    """The rules that read a decided value (the recipe's batch size and schedule)."""
    if settings.reranker and settings.batch_size < 2:
        raise SettingError("`batch_size` 1: the re-ranker draws its hard negatives from the batch, so it needs 2 "
                           "triplets at least")
    recipe = settings.recipe
    epochs, pct_start = recipe.schedule(recipe.num_epochs, settings.schedule_over_run)
    if pct_start > 1:
        raise SettingError(
            f"`num_epochs` {recipe.num_epochs}: the {settings.dataset} recipe warms up for {recipe.warmup_epochs} "
            f"epochs, longer than the {epochs}-epoch schedule; train at least {math.ceil(recipe.warmup_epochs)} epochs"
        )


def field_names() -> list[str]:
    """Every setting, in declaration order."""
    return [f.name for f in fields(TrainConfig)]
