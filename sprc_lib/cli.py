"""`python -m sprc_lib <command>`: one entry point for every job the course runs from a shell.

Argument parsing only: each command calls one library function. The training flags are declared
once, with `sprc_lib.training.config.TrainConfig`; the evaluation commands reuse those declarations.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from sprc_lib.errors import UserError
from sprc_lib.training import config as settings

SEED_MODEL_NAME = "blip2_cir_align_prompt"

# Exit codes: a user's mistake, and a run stopped by Ctrl-C or by the termination signal (128 + signal).
USER_ERROR, INTERRUPTED, TERMINATED = 2, 130, 143


class _Parser(argparse.ArgumentParser):
    """argparse, with a short error (one line and a hint, not the whole usage), a near flag suggested for a
    typo, and negative numbers in scientific notation read as numbers (`--learning-rate -1e-3`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d*\.?\d+[eE][-+]?\d+$")

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            flags = [o for action in self._all_actions() for o in action.option_strings]
            typos = [w for w in message.split(": ", 1)[-1].split() if w.startswith("--")]
            near = [m for t in typos for m in difflib.get_close_matches(t.split("=")[0], flags, n=1)]
            message += f" (did you mean {', '.join(near)}?)" if near else ""
        self.exit(2, f"error: {message} (`{self.prog} --help` lists the flags)\n")

    def _all_actions(self) -> list[argparse.Action]:
        subparsers = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
        return self._actions + [x for sp in subparsers for p in sp.choices.values() for x in p._actions]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sprc_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    from sprc_lib.cli_eval import REGISTRY  # the evaluation commands, kept in their own module

    for register in [*_REGISTRY, *REGISTRY]:
        register(sub)
    return parser


def _command(sub: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    """A sub-command, with the flags every one takes."""
    p = sub.add_parser(name, help=text)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error (for a bug report)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a user's mistake is one line on stderr and exit code 2, a bug keeps its traceback."""
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return int(args.run(args) or 0)
    except UserError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return INTERRUPTED


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as a person reads them on a command line: one line, without the library's source."""
    print(f"warning: {message}", file=sys.stderr)


# Each entry adds one sub-command; the module that does the work is imported only when it runs.
_REGISTRY: list[Callable[[argparse._SubParsersAction], None]] = []


def _register_toy_data(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "toy-data", "generate the toy CIRR and FashionIQ datasets (real layouts)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <home>/data/toy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=("small", "medium"), default="small")
    p.set_defaults(run=_run_toy_data)


def _run_toy_data(args: argparse.Namespace) -> int:
    from sprc_lib.data.check import data_tour
    from sprc_lib.data.toy import generate_toy_data
    from sprc_lib.paths import toy_root

    out = args.out or toy_root()
    summary = generate_toy_data(out, seed=args.seed, size=args.size)
    print(f"Wrote the {args.size} toy datasets (seed {args.seed}) to {out} in {summary['seconds']:.1f} s.\n")
    return data_tour(out)


def _register_check_data(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "check-data", "validate a dataset folder: layout, schemas, counts, images")
    settings.add_flags(p, ["dataset", "data_path", "skip_missing"], help={
        "data_path": "the folder that contains cirr_dataset/ or fashionIQ_dataset/ (default: data/ or $SPRC_DATA)",
        "skip_missing": "accept missing images, as --skip-missing does for train and validate"})
    p.add_argument("--verify-images", action="store_true", help="decode every image (slow on real data)")
    p.set_defaults(run=_run_check_data)


def _run_check_data(args: argparse.Namespace) -> int:
    from sprc_lib.data.check import run_check
    from sprc_lib.paths import data_root

    if args.dataset is None:
        raise UserError("--dataset is required (CIRR or FashionIQ)")
    return run_check(args.dataset, args.data_path or data_root(), args.verify_images, bool(args.skip_missing))


def _register_course(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "course", "the toy track end to end: data, the shipped tiny models, evaluation, notebooks")
    p.add_argument("--data-path", type=Path, default=None, help="toy data root (default: data/toy)")
    p.add_argument("--retrain", action="store_true", help="pretrain and train every tiny model again on this machine "
                   "(a local retraining, not the course's reference weights)")
    p.add_argument("--models-only", action="store_true", help="only make sure the tiny models exist (make models)")
    p.set_defaults(run=_run_course)


def _run_course(args: argparse.Namespace) -> int:
    from sprc_lib.course.run import run_course

    return run_course(args.data_path, retrain=args.retrain, models_only=args.models_only)


def _register_unpack_data(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "unpack-data", "unpack a dataset .zip/.tar(.gz) onto local disk (e.g. from Drive), then check it")
    p.add_argument("archive", type=Path, metavar="ARCHIVE", help="a .zip, .tar, .tar.gz or .tgz of a dataset folder")
    p.add_argument("--out", type=Path, metavar="DEST", help="folder to unpack into (default: the data root)")
    settings.add_flags(p, ["dataset"], help={"dataset": "CIRR or FashionIQ (default: read from the archive's layout)"})
    p.add_argument("--skip-missing", action="store_true", help="accept missing images (FashionIQ), as check-data does")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset folder DEST already holds")
    p.set_defaults(run=_run_unpack_data)


def _run_unpack_data(args: argparse.Namespace) -> None:
    from sprc_lib.data.unpack import unpack_dataset

    unpack_dataset(args.archive, args.out, args.dataset, args.skip_missing, args.overwrite)


_REGISTRY += [_register_toy_data, _register_check_data, _register_unpack_data, _register_course]


# ---------------------------------------------------------------- model commands (the seed README's flags)

def _blip_model_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--blip-model-name", default=SEED_MODEL_NAME, help="kept for the seed's commands; only "
                   f"{SEED_MODEL_NAME} (SPRC) exists here")


def _check_model_name(args: argparse.Namespace) -> None:
    if args.blip_model_name != SEED_MODEL_NAME:
        raise UserError(f"--blip-model-name {args.blip_model_name}: this library implements only "
                        f"{SEED_MODEL_NAME} (SPRC); drop the flag or pass that name")


def _data_and_preset(data_path: str | Path | None, preset: str | None, dataset: str) -> tuple[str, str]:
    """The defaults the seed's commands imply: toy data for the tiny preset, the tiny preset on toy data.

    The data folder is checked here, so a wrong path is named before any model loads (or is fetched).
    """
    from sprc_lib.data.schema import check_root
    from sprc_lib.data.toy import MARKER
    from sprc_lib.paths import data_root, toy_root

    if data_path is None:
        data_path = toy_root() if preset == "tiny" else data_root()
    check_root(data_path, dataset)
    if preset is None:
        preset = "tiny" if (Path(data_path) / MARKER).is_file() else "blip2-vitg"
    return str(data_path), preset


# Settings only one of the two training commands has (the `reranker` setting is the command itself).
_SPRC_ONLY = {"reranker", "stage1_model", "rerank_top_k", "rerank_fuse"}
_RERANKER_ONLY = {"reranker", "global_negatives", "micro_batch", "loss_rtc", "loss_align"}


def _register_train(sub: argparse._SubParsersAction) -> None:
    for name, text, left_out in (
        ("train", "train SPRC with the authors' recipe (resumable)", _SPRC_ONLY),
        ("train-reranker", "train SPRC²'s re-ranker (the ITM cross-encoder, hard negatives) like SPRC (resumable)",
         _RERANKER_ONLY),
    ):
        p = _command(sub, name, text)
        settings.add_flags(p, [n for n in settings.field_names() if n not in left_out])
        _blip_model_name(p)
        p.add_argument("--resume", default=None, help="continue a stopped run in its folder (or its checkpoint.pt); "
                       "settings not given come from the run")
        p.add_argument("--stop-after-steps", type=int, default=None, help="stop (with a checkpoint) after N steps")
        p.add_argument("--overwrite", action="store_true", help="replace the run that --output-dir already holds")
        p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from sprc_lib.training.trainer import resume_training, train

    _check_model_name(args)
    given = settings.given_settings(args)
    given["reranker"] = args.command == "train-reranker"  # on resume too: each command resumes its own runs
    if args.resume:
        if args.overwrite:
            raise UserError("--overwrite replaces a run, --resume continues one: pass one of them")
        result = resume_training(args.resume, stop_after_steps=args.stop_after_steps, **given)
    else:
        if args.dataset is None:
            raise UserError("--dataset is required (CIRR or FashionIQ)")
        settings.resolve({**given, "data_path": "unchecked", "preset": args.preset or "tiny"})  # the flags first
        given["data_path"], given["preset"] = _data_and_preset(args.data_path, args.preset, args.dataset)
        config, _ = settings.resolve(given)
        result = train(config, stop_after_steps=args.stop_after_steps, overwrite=args.overwrite)
    print(f"run folder: {result.run_dir}")
    if result.best:
        print(f"best epoch {result.best['epoch']}: {result.best['key']} = {result.best['score']:.2f}")
    return {"SIGINT": INTERRUPTED, "SIGTERM": TERMINATED}.get(result.stopped or "", 0)


def _register_pretrain_tiny(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "pretrain-tiny", "pretrain the tiny BLIP-2 on the toy image-text pairs (stage 1)")
    p.add_argument("--data-path", type=Path, default=None, help="toy data root (default: data/toy)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <data-path>/tiny-blip2)")
    for flag, kind in [("--steps", int), ("--batch-size", int), ("--learning-rate", float), ("--query-dropout", float),
                       ("--seed", int)]:
        p.add_argument(flag, type=kind, help="default: the tiny recipe's (sprc_lib.training.pretrain)")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=_run_pretrain_tiny)


def _run_pretrain_tiny(args: argparse.Namespace) -> int:
    from sprc_lib.paths import toy_root
    from sprc_lib.training.pretrain import TINY_BLIP2, pretrain_tiny_blip2

    root = args.data_path or toy_root()
    given = {k: v for k in ("steps", "batch_size", "learning_rate", "query_dropout", "seed")
             if (v := getattr(args, k)) is not None}
    out = pretrain_tiny_blip2(root, args.out or root / TINY_BLIP2, device=args.device, **given)
    print(f"tiny BLIP-2 saved to {out}: a local retraining, not the course's reference weights (the tiny models "
          "trained from it differ from the shipped ones; `make models RETRAIN=1` retrains them all)")
    return 0


_REGISTRY += [_register_train,
              _register_pretrain_tiny]


def _register_bench(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "bench", "training/indexing throughput with and without the feature cache, side by side")
    p.add_argument("--preset", choices=("tiny", "proportional", "blip2-vitg"), default="tiny",
                   help="proportional: CPU-sized, with the paper's ViT-to-Q-Former cost ratio")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--micro-batch", type=int, default=None,
                   help="also measure one step's peak memory, whole batch vs micro-batches of N, beside the plan")
    p.add_argument("--memory-only", action="store_true", help="only the memory rows (with --micro-batch)")
    p.set_defaults(run=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from sprc_lib.course.bench import print_bench

    if args.memory_only and not args.micro_batch:
        raise UserError("--memory-only needs --micro-batch: the memory rows compare the whole batch with it")
    print_bench(preset=args.preset, batch_size=args.batch_size, repeats=args.repeats, device=args.device,
                precision=args.precision, micro_batch=args.micro_batch, memory_only=args.memory_only)
    return 0


def _register_plan(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "plan", "predict a training step's peak GPU memory, and which GPUs it fits")
    p.add_argument("--preset", choices=("tiny", "proportional", "blip2-vitg"), default="blip2-vitg")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=None, help="the gradient cache's micro-batch (default: the "
                   "largest power of two that fits a T4)")
    p.add_argument("--cache", action="store_true", help="train from the feature cache (no ViT in the step)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.set_defaults(run=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    from sprc_lib.course.bench import print_plan

    print_plan(args.preset, args.batch_size, args.micro_batch, args.cache, args.gradient_checkpointing)
    return 0


_REGISTRY += [_register_bench, _register_plan]
