"""The one declaration of a training run's settings: the config, the `train` flags, and what `--resume` may change.

Each field of `TrainConfig` is declared once, with its default, its help and its kind on resume:

- `FIXED`: part of what the run *is* (data, model, recipe, seed, precision). A resumed run keeps
  the saved value; giving another one stops with a message that names the setting.
- `APPLIED`: how or where the run goes on (paths, workers, device, what gets saved). A value given
  on resume is used from there on and recorded, with the epoch and step it changed at, in the
  run's `training_hyperparameters.json`; a value not given comes from the run.

The `train` command builds its flags from these fields (`add_flags`) and turns the parsed flags
back into settings (`given_settings`); `resolve` combines them with a saved run.
"""

from __future__ import annotations

import argparse
import math
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sprc_lib.data.schema import DATASETS
from sprc_lib.errors import UserError
from sprc_lib.training.recipes import Recipe, recipe_for
from sprc_lib.training.reports import REPORT_TO, summary_writer

FIXED, APPLIED = "fixed", "applied"
RECIPE = "recipe"  # the default of a recipe field: the dataset's recipe decides


class SettingError(UserError, ValueError):
    """A setting that cannot be used as given (e.g. a fixed one changed on resume); the message says what to do."""


def dataset_name(value: str) -> str:
    """'CIRR' / 'FashionIQ' in any case, as the seed's commands spell them ('fashionIQ' appears in its README)."""
    for name in DATASETS:
        if value.lower() == name.lower():
            return name
    raise argparse.ArgumentTypeError(f"--dataset must be {' or '.join(DATASETS)}, got {value!r}")


def _setting(default: Any, help: str, resume: str = FIXED, **cli: Any) -> Any:
    return field(default=None if default is RECIPE else default,
                 metadata={"help": help, "resume": resume, "recipe": default is RECIPE, "cli": cli})


@dataclass
class TrainConfig:
    """Everything a run needs besides the recipe; recipe fields left as None take the recipe's value."""

    dataset: str = _setting("CIRR", "CIRR or FashionIQ", type=dataset_name)
    data_path: str = _setting("data/toy", "folder with cirr_dataset/ and fashionIQ_dataset/ (default: data/toy "
                              "for the tiny preset, else data/ or $SPRC_DATA)", APPLIED)
    preset: str = _setting("tiny", "model sizes: tiny (CPU minutes) or blip2-vitg (the paper's); default: tiny on "
                           "toy data, else blip2-vitg", choices=("tiny", "blip2-vitg"))
    model_path: str | None = _setting(None, "initial weights: a BLIP-2 folder or hub id, a saved SPRC model, a "
                                      "released .pt (default: Salesforce/blip2-itm-vit-g, or <data-path>/tiny-blip2)")
    tokenizer: str | None = _setting(None, "tokenizer folder or hub id (default: beside the initial weights)")
    output_dir: str | None = _setting(None, "run folder (default: runs/<dataset>_<preset>_<time>); a resumed run "
                                      "writes into the folder it resumes")
    num_epochs: int | None = _setting(RECIPE, "epochs to train (CIRR 50, FashionIQ 30)")
    learning_rate: float | None = _setting(RECIPE, "OneCycle peak learning rate (CIRR 1e-5, FashionIQ 2e-5)")
    batch_size: int | None = _setting(RECIPE, "triplets per step and process (128)")
    loss_rtc: float | None = _setting(RECIPE, "RTC loss weight (CIRR 0.4, FashionIQ 1)")
    loss_align: float | None = _setting(RECIPE, "alignment loss weight (CIRR 0.4, FashionIQ 1)")
    validation_frequency: int | None = _setting(RECIPE, "validate every N epochs (1)", APPLIED)
    transform: str | None = _setting(RECIPE, "image preprocessing (targetpad)", choices=("targetpad", "squarepad"))
    target_ratio: float | None = _setting(RECIPE, "TargetPad ratio (1.25; targetpad only)")
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

    def recipe(self) -> Recipe:
        """The dataset's recipe for this preset, with the recipe fields this config sets."""
        return recipe_for(self.dataset, self.preset).with_overrides(
            **{f.name: getattr(self, f.name) for f in fields(self) if f.metadata["recipe"]}
        )

    def value(self, name: str) -> Any:
        """What a setting amounts to: a recipe field left as None reads the recipe's value."""
        value = getattr(self, name)
        if value is None and _field(name).metadata["recipe"]:
            return getattr(self.recipe(), name)
        return value


def _field(name: str):
    return next(f for f in fields(TrainConfig) if f.name == name)


def kind(name: str) -> str:
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
        if not f.metadata["recipe"] and f.default is not None and "default" not in text:
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
        return f"{_flag(self.setting)} {self.old!r} -> {self.new!r}"


def resolve(given: dict[str, Any], saved: dict[str, Any] | None = None,
            run_dir: str | None = None) -> tuple[TrainConfig, list[Change]]:
    """The config of a run: defaults updated by `given`; on resume, the `saved` config updated by `given`.

    On resume, a FIXED setting given with another value than the run's raises `SettingError` naming
    it (all of them at once); an APPLIED one is taken and returned as a `Change`. `run_dir` is the
    folder resumed, which becomes the run's `output_dir`.
    """
    unknown = sorted(set(given) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise SettingError(f"unknown training setting(s): {', '.join(unknown)}")
    if saved is None:
        config = TrainConfig(**given)
        check(config)
        return config, []
    known = {f.name for f in fields(TrainConfig)}
    base = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    base.output_dir = run_dir or base.output_dir
    if given.get("reranker", base.reranker) != base.reranker:  # the command, not a flag, says which model
        model, command = ("the SPRC² re-ranker", "train-reranker") if base.reranker else ("SPRC", "train")
        raise SettingError(f"{run_dir or 'the run'} trains {model}: resume it with `python -m sprc_lib {command} "
                           f"--resume {run_dir or 'RUN'}`")
    fixed, changes = [], []
    for name, new in given.items():
        old = base.value(name)
        if new == old:
            continue
        if kind(name) == FIXED:
            fixed.append(f"{_flag(name)} {new!r} (the run has {old!r})")
        else:
            changes.append(Change(name, old, new))
    if fixed:
        raise SettingError(
            f"{'; '.join(fixed)}: fixed for a run, so a resumed run keeps its own. Drop the flag to resume, "
            "or start a new run (another --output-dir) to train with the new value."
        )
    config = TrainConfig(**{**asdict(base), **{c.setting: c.new for c in changes}})
    check(config)
    return config, changes


# The least value of each numeric setting (None: any), checked before any work starts.
_LEAST = {"num_epochs": 1, "batch_size": 1, "micro_batch": 1, "validation_frequency": 1, "num_workers": 0,
          "checkpoint_every": 0, "rerank_top_k": 1,
          "loss_rtc": 0.0, "loss_align": 0.0, "target_ratio": 1.0}


def check(config: TrainConfig) -> None:
    """Every setting usable as given, before any work starts; a SettingError names the flag otherwise."""
    if config.dataset not in DATASETS:
        raise SettingError(f"--dataset {config.dataset!r}: choose {' or '.join(DATASETS)}")
    for name, least in _LEAST.items():
        value = config.value(name)
        if value is not None and value < least:
            raise SettingError(f"{_flag(name)} {value}: must be at least {least}")
    if not config.value("learning_rate") > 0:
        raise SettingError(f"--learning-rate {config.value('learning_rate')}: must be above 0")
    if config.save_best and not config.save_training:
        raise SettingError("--save-best needs --save-training (as in the seed's commands): nothing is saved otherwise")
    if config.rerank_fuse is not None and not 0.0 <= config.rerank_fuse <= 1.0:
        raise SettingError(f"--rerank-fuse {config.rerank_fuse}: give a weight between 0 (pure re-ranking) and 1")
    if config.reranker and config.micro_batch:
        raise SettingError("--micro-batch: the gradient cache is SPRC's (its losses compare a whole batch); the "
                           "re-ranker trains without it, so lower --batch-size instead")
    if config.auxiliary_prompt == "per-sample" and config.reranker:
        raise SettingError("--auxiliary-prompt per-sample is SPRC's alignment; the re-ranker has no prompts")
    if config.auxiliary_prompt == "per-sample" and config.micro_batch:
        raise SettingError("--auxiliary-prompt per-sample trains without the gradient cache: drop --micro-batch, or "
                           "lower --batch-size")
    if config.reranker and config.global_negatives:
        raise SettingError("--global-negatives is SPRC's; the re-ranker mines its hard negatives within each "
                           "process's batch, as the authors do")
    if config.reranker and config.value("batch_size") < 2:
        raise SettingError("--batch-size 1: the re-ranker draws its hard negatives from the batch, so it needs 2 "
                           "triplets at least")
    if config.report_to == "tensorboard":
        summary_writer()  # a missing package stops here, not after the set-up
    if config.transform == "squarepad" and config.target_ratio is not None:
        raise SettingError("--target-ratio only applies to --transform targetpad")
    recipe = config.recipe()
    epochs, pct_start = recipe.schedule(recipe.num_epochs, config.schedule_over_run)
    if pct_start > 1:
        raise SettingError(
            f"--num-epochs {recipe.num_epochs}: the {config.dataset} recipe warms up for {recipe.warmup_epochs} "
            f"epochs, longer than the {epochs}-epoch schedule; train at least {math.ceil(recipe.warmup_epochs)} epochs"
        )


def field_names() -> list[str]:
    """Every setting, in declaration order."""
    return [f.name for f in fields(TrainConfig)]


def default(name: str) -> Any:
    """A setting's declared default (None for a recipe field: the recipe decides)."""
    return _field(name).default

