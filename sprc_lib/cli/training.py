"""The training commands: train and train-reranker (the seed README's flags), and pretrain-tiny."""

from __future__ import annotations

import argparse
from pathlib import Path

from sprc_lib.cli.common import INTERRUPTED, TERMINATED, blip_model_name, check_model_name, command
from sprc_lib.errors import UserError
from sprc_lib.training import config

# Settings only one of the two training commands has (the `reranker` setting is the command itself).
_SPRC_ONLY = {"reranker", "stage1_model", "rerank_top_k", "rerank_fuse"}
_RERANKER_ONLY = {"reranker", "global_negatives", "micro_batch", "loss_rtc", "loss_align", "auxiliary_prompt"}


def _register_train(sub: argparse._SubParsersAction) -> None:
    for name, text, left_out in (
        ("train", "train SPRC with the authors' recipe (resumable)", _SPRC_ONLY),
        ("train-reranker", "train SPRC²'s re-ranker (the ITM cross-encoder, hard negatives) like SPRC (resumable)",
         _RERANKER_ONLY),
    ):
        p = command(sub, name, text)
        config.add_flags(p, [n for n in config.field_names() if n not in left_out])
        blip_model_name(p)
        p.add_argument("--resume", default=None, help="continue a stopped run in its folder (or its checkpoint.pt); "
                       "settings not given come from the run")
        p.add_argument("--stop-after-steps", type=int, default=None, help="stop (with a checkpoint) after N steps")
        p.add_argument("--overwrite", action="store_true", help="replace the run that --output-dir already holds")
        p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from sprc_lib.training.trainer import resume_training, train

    check_model_name(args)
    given = config.given_settings(args)
    given["reranker"] = args.command == "train-reranker"  # on resume too: each command resumes its own runs
    if args.resume:
        if args.overwrite:
            raise UserError("--overwrite replaces a run, --resume continues one: pass one of them")
        result = resume_training(args.resume, stop_after_steps=args.stop_after_steps, **given)
    else:
        result = train(config.TrainConfig(**given), stop_after_steps=args.stop_after_steps, overwrite=args.overwrite)
    print(f"run folder: {result.run_dir}")
    if result.best:
        print(f"best epoch {result.best['epoch']}: {result.best['key']} = {result.best['score']:.2f}")
    return {"SIGINT": INTERRUPTED, "SIGTERM": TERMINATED}.get(result.stopped or "", 0)


def _register_pretrain_tiny(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "pretrain-tiny", "pretrain the tiny BLIP-2 on the toy image-text pairs (stage 1)")
    p.add_argument("--data-path", type=Path, default=None, help="toy data root (default: data/toy)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <data-path>/tiny-blip2)")
    for flag, value_type in [("--steps", int), ("--batch-size", int), ("--learning-rate", float),
                             ("--query-dropout", float), ("--seed", int)]:
        p.add_argument(flag, type=value_type, help="default: the tiny recipe's (sprc_lib.training.pretrain)")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=_run_pretrain_tiny)


def _run_pretrain_tiny(args: argparse.Namespace) -> int:
    from sprc_lib.paths import toy_root
    from sprc_lib.training.pretrain import pretrain_tiny_blip2
    from sprc_lib.training.tiny_layout import TINY_BLIP2

    root = args.data_path or toy_root()
    given = {k: v for k in ("steps", "batch_size", "learning_rate", "query_dropout", "seed")
             if (v := getattr(args, k)) is not None}
    out = pretrain_tiny_blip2(root, args.out or root / TINY_BLIP2, device=args.device, **given)
    print(f"tiny BLIP-2 saved to {out}: a local retraining, not the course's reference weights (the tiny models "
          "trained from it differ from the shipped ones; `make models RETRAIN=1` retrains them all)")
    return 0


COMMANDS = [_register_train, _register_pretrain_tiny]


