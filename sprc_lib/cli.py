"""`python -m sprc_lib <command>`: one entry point for every job the course runs from a shell."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


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
