"""The evaluation commands: validate, cirr-submission (each with SPRC²'s re-ranking), convert."""

from __future__ import annotations

import argparse
from pathlib import Path

from sprc_lib.cli.common import FLAGS, blip_model_name, check_model_name, command
from sprc_lib.errors import UserError
from sprc_lib.training import config

_EVAL_FLAGS = ["data_path", "preset", "model_path", "tokenizer", "num_workers", "batch_size", "transform",
               "target_ratio", "feature_cache", "precision", "device", "skip_missing"]


def _add_eval_flags(p: argparse.ArgumentParser, model_help: str) -> None:
    config.add_flags(p, _EVAL_FLAGS, help={"model_path": model_help, "batch_size": "batch size (default: 32)",
                                             "transform": "image preprocessing (default: targetpad)",
                                             "target_ratio": "TargetPad ratio (default: 1.25)"})
    blip_model_name(p)


def _context(args: argparse.Namespace, dataset: str):
    """The evaluation context the flags describe (the model loaded, on its device, with its cache), and the settings
    they resolve to."""
    from sprc_lib.evaluation.context import EVAL_BATCH_SIZE, make_eval_context
    from sprc_lib.model.loading import load_model_and_tokenizer

    check_model_name(args)
    if args.model_path is None:
        raise UserError("--model-path is required: a saved model folder, a run's checkpoint.pt, or sprc_cirr.pt")
    if getattr(args, "rerank_model", None) is None:
        for flag in ("rerank_top_k", "rerank_fuse"):
            if getattr(args, flag, None) is not None:
                raise UserError(f"{FLAGS[flag]} applies to a re-ranker: pass --rerank-model too")
    run = config.resolve(config.TrainConfig(**{**config.given_settings(args), "dataset": dataset}))
    # the tokenizer as given: without one, the loader finds the model's own beside it (or BLIP-2's for a .pt)
    model, tokenizer = load_model_and_tokenizer(run.model_path, args.tokenizer, run.preset)
    return make_eval_context(model, tokenizer, run, batch_size=args.batch_size or EVAL_BATCH_SIZE), run


def _add_rerank_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rerank-model", default=None, help="SPRC²: re-order each query's top K with this re-ranker "
                   "(a train-reranker run's best/ or final/, or its checkpoint.pt)")
    config.add_flags(p, ["rerank_top_k", "rerank_fuse"], help={
        "rerank_top_k": "candidates re-ordered per query (default: the authors' CIRR 200, FashionIQ 40; tiny: "
                        "CIRR 20, FashionIQ 40)",
        "rerank_fuse": "order the top K by ALPHA x stage 1 (rescaled to [0, 1] per query) + (1 - ALPHA) x the "
                       "re-ranker's probability; 0 is the authors' pure re-ranking (default: 0; tiny: 0.5)"})


def _reranker(args: argparse.Namespace, ctx, run):
    """The re-ranker the flags name, ready to score beside the stage-1 context `ctx` (None without --rerank-model)."""
    from sprc_lib.evaluation.context import make_eval_context
    from sprc_lib.evaluation.rerank import Reranker
    from sprc_lib.model.loading import load_model_and_tokenizer

    if args.rerank_model is None:
        return None
    model, tokenizer = load_model_and_tokenizer(args.rerank_model, args.tokenizer, run.preset, "rerank_model",
                                                vit_from=ctx.model)
    if not model.shares_vit_with(ctx.model):
        print(f"note: the frozen ViT of --rerank-model {args.rerank_model} differs from --model-path's, so both are "
              "kept in memory; models started from one BLIP-2 share it")
    rerank_ctx = make_eval_context(model, tokenizer, run, device=ctx.device, batch_size=ctx.batch_size)
    return Reranker(rerank_ctx, run.rerank_top_k, run.rerank_fuse)


def _register_validate(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "validate", "evaluate a model on CIRR or FashionIQ val, beside chance level")
    config.add_flags(p, ["dataset"])
    _add_eval_flags(p, "a saved model folder, a run's checkpoint.pt, or a released sprc_*.pt")
    _add_rerank_flags(p)
    p.add_argument("--output", type=Path, default=None, help="also write the metrics as JSON here")
    p.set_defaults(run=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    import json

    from sprc_lib.evaluation import chance
    from sprc_lib.evaluation.protocols import validation_stages
    from sprc_lib.tables import metrics_table, stages_table

    ctx, run = _context(args, args.dataset)
    reranker = _reranker(args, ctx, run)
    stages = validation_stages(ctx, run.dataset, run.data_path, reranker)
    print(f"{run.dataset} val, {args.model_path}")
    base = chance(run.dataset, run.data_path, ctx.skip_missing)
    if reranker is None:
        print(metrics_table(stages[0], base))
    else:
        print(f"re-ranked by {args.rerank_model}: the top {reranker.top_k} of each query, fuse {reranker.fuse:g}")
        print(stages_table({"SPRC": stages[0], "SPRC²": stages[1]}, base))
    for line in ctx.skipped_lines():
        print(line)
    if args.output:
        result = stages[0] if reranker is None else {"SPRC": stages[0], "SPRC²": stages[1]}
        args.output.write_text(json.dumps(result, indent=2))
    return 0


def _register_cirr_submission(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "cirr-submission", "write the CIRR test1 files for the evaluation server")
    _add_eval_flags(p, "a saved model folder, a run's checkpoint.pt, or a released sprc_cirr.pt")
    p.add_argument("--submission-name", default=None, help="files are recall_submission_<name>.json ...")
    p.add_argument("--output-dir", type=Path, default=Path("submission"))
    p.add_argument("--overwrite", action="store_true", help="replace submission files of the same name there")
    _add_rerank_flags(p)
    p.set_defaults(run=_run_cirr_submission)


def _run_cirr_submission(args: argparse.Namespace) -> int:
    from sprc_lib.evaluation import cirr_test_submission
    from sprc_lib.evaluation.submission import check_output_dir

    check_output_dir(args.output_dir)  # before the model loads and the test split is scored
    ctx, run = _context(args, "CIRR")
    path = Path(args.model_path)
    name = args.submission_name or (f"{path.resolve().parent.name}_{path.name}" if path.is_dir() else path.stem)
    held = [p.name for p in (args.output_dir / f"recall_submission_{name}.json",
                             args.output_dir / f"recall_subset_submission_{name}.json") if p.exists()]
    if held and not args.overwrite:
        raise UserError(f"--output-dir {args.output_dir} already holds {' and '.join(held)}: choose another "
                        "--submission-name or --output-dir, or replace them with --overwrite")
    paths = cirr_test_submission(ctx, run.data_path, args.output_dir, name, _reranker(args, ctx, run))
    for line in ctx.skipped_lines():
        print(line)
    print("wrote (validated):\n" + "\n".join(f"  {p}" for p in paths))
    print("upload both to the CIRR evaluation server (see Test-split_server.md in the CIRR repository)")
    return 0


def _register_convert(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "convert", "convert a released LAVIS checkpoint (sprc_*.pt) to this project's format")
    p.add_argument("--lavis-checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder (safetensors + config.json + tokenizer)")
    p.add_argument("--preset", default="blip2-vitg", help="the sizes (a released file has none): tiny, blip2-vitg, "
                   "or a BLIP-2 folder or hub id whose config gives them")
    p.add_argument("--tokenizer", default=None, help="tokenizer to save beside it (default: BLIP-2's)")
    p.add_argument("--overwrite", action="store_true", help="replace the model folder --out already holds")
    p.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from sprc_lib.model.loading import convert_lavis_checkpoint

    count = convert_lavis_checkpoint(args.lavis_checkpoint, args.out, args.preset, args.tokenizer, args.overwrite)
    print(f"converted {args.lavis_checkpoint} -> {args.out} ({count:,} parameters)")
    return 0


COMMANDS = [_register_validate, _register_cirr_submission, _register_convert]
