"""`python -m sprc_lib <command>`: one entry point for every job the course runs from a shell."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sprc_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _REGISTRY:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


# Each entry adds one sub-command; the module that does the work is imported only when it runs.
_REGISTRY: list[Callable[[argparse._SubParsersAction], None]] = []


def _register_toy_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("toy-data", help="generate the toy CIRR and FashionIQ datasets (real layouts)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: data/toy, $SPRC_DATA/toy)")
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
    p = sub.add_parser("check-data", help="validate a dataset folder: layout, schemas, counts, images")
    p.add_argument("--dataset", choices=("CIRR", "FashionIQ"), required=True)
    p.add_argument("--data-path", type=Path, default=None, help="the folder that contains cirr_dataset/ or "
                   "fashionIQ_dataset/ (default: data/ or $SPRC_DATA)")
    p.add_argument("--verify-images", action="store_true", help="decode every image (slow on real data)")
    p.add_argument("--skip-missing", action="store_true",
                   help="accept missing images, as training with skip_missing=True does")
    p.set_defaults(run=_run_check_data)


def _run_check_data(args: argparse.Namespace) -> int:
    from sprc_lib.data.check import run_check
    from sprc_lib.paths import data_root

    return run_check(args.dataset, args.data_path or data_root(), args.verify_images, args.skip_missing)


def _register_course(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("course", help="run the course's main job (for now: a tour of the toy datasets)")
    p.add_argument("--data-path", type=Path, default=None, help="toy data root (default: data/toy)")
    p.set_defaults(run=_run_course)


def _run_course(args: argparse.Namespace) -> int:
    from sprc_lib.data.check import data_tour
    from sprc_lib.paths import toy_root

    return data_tour(args.data_path or toy_root())


_REGISTRY += [_register_toy_data, _register_check_data, _register_course]
