"""The planning commands: bench (throughput, side by side) and plan (a step's peak GPU memory)."""

from __future__ import annotations

import argparse

from sprc_lib.cli.common import command
from sprc_lib.errors import UserError


def _register_bench(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "bench", "training/indexing throughput with and without the feature cache, side by side")
    p.add_argument("--preset", choices=("tiny", "proportional", "blip2-vitg"), default="tiny",
                   help="proportional: CPU-sized, with the paper's ViT-to-Q-Former cost ratio")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--micro-batch", type=int, default=None,
                   help="also measure one step's peak memory, whole batch vs micro-batches of N, beside the plan")
    p.add_argument("--memory-only", action="store_true", help="only the memory rows (with --micro-batch)")
    p.add_argument("--training-only", action="store_true",
                   help="only the training steps and the ViT alone (what the feature cache buys), no index, query or "
                        "re-ranking rows: at the blip2-vitg size on a CPU, minutes instead of hours")
    p.set_defaults(run=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from sprc_lib.course.bench import print_bench

    if args.memory_only and not args.micro_batch:
        raise UserError("--memory-only needs --micro-batch: the memory rows compare the whole batch with it")
    print_bench(preset=args.preset, batch_size=args.batch_size, repeats=args.repeats, device=args.device,
                precision=args.precision, micro_batch=args.micro_batch, memory_only=args.memory_only,
                training_only=args.training_only)
    return 0


def _register_plan(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "plan", "predict a training step's peak GPU memory, and which GPUs it fits")
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


COMMANDS = [_register_bench, _register_plan]
