"""The data commands: toy-data, check-data, unpack-data, and the toy track end to end (course)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sprc_lib.cli.common import command
from sprc_lib.errors import UserError
from sprc_lib.training import config


def _register_toy_data(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "toy-data", "generate the toy CIRR and FashionIQ datasets (real layouts)")
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
    p = command(sub, "check-data", "validate a dataset folder: layout, schemas, counts, images")
    config.add_flags(p, ["dataset", "data_path", "skip_missing"], help={
        "data_path": "the folder that contains cirr_dataset/ or fashionIQ_dataset/ (default: data/ or $SPRC_DATA)",
        "skip_missing": "accept missing images, as --skip-missing does for train and validate"})
    p.add_argument("--verify-images", action="store_true", help="decode every image (slow on real data)")
    p.set_defaults(run=_run_check_data)


def _run_check_data(args: argparse.Namespace) -> int:
    from sprc_lib.data.check import run_check
    from sprc_lib.data.schema import check_root
    from sprc_lib.paths import data_root

    if args.dataset is None:
        raise UserError("--dataset is required (CIRR or FashionIQ)")
    check_root(args.data_path or data_root(), args.dataset)
    return run_check(args.dataset, args.data_path or data_root(), args.verify_images, bool(args.skip_missing))


def _register_course(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "course", "the toy track end to end: data, the shipped tiny models, evaluation, notebooks")
    p.add_argument("--data-path", type=Path, default=None, help="toy data root (default: data/toy)")
    p.add_argument("--retrain", action="store_true", help="pretrain and train every tiny model again on this machine "
                   "(a local retraining, not the course's reference weights)")
    p.add_argument("--models-only", action="store_true", help="only make sure the tiny models exist (make models)")
    p.set_defaults(run=_run_course)


def _run_course(args: argparse.Namespace) -> int:
    from sprc_lib.course.run import run_course

    return run_course(args.data_path, retrain=args.retrain, models_only=args.models_only)


def _register_unpack_data(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "unpack-data", "unpack a dataset .zip/.tar(.gz) onto local disk (e.g. from Drive), then check it")
    p.add_argument("archive", type=Path, metavar="ARCHIVE", help="a .zip, .tar, .tar.gz or .tgz of a dataset folder")
    p.add_argument("--out", type=Path, metavar="DEST", help="folder to unpack into (default: the data root)")
    config.add_flags(p, ["dataset"], help={"dataset": "CIRR or FashionIQ (default: read from the archive's layout)"})
    p.add_argument("--skip-missing", action="store_true", help="accept missing images (FashionIQ), as check-data does")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset folder DEST already holds")
    p.set_defaults(run=_run_unpack_data)


def _run_unpack_data(args: argparse.Namespace) -> None:
    from sprc_lib.data.unpack import unpack_dataset

    unpack_dataset(args.archive, args.out, args.dataset, args.skip_missing, args.overwrite)


COMMANDS = [_register_toy_data, _register_check_data, _register_unpack_data, _register_course]


