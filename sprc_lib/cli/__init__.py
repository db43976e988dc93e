"""`python -m sprc_lib <command>`: one entry point for every job the course runs from a shell.

Argument parsing only: each command calls one library function. The training flags are declared
once, with `sprc_lib.training.config.TrainConfig`; the evaluation commands reuse those declarations.

Each module of this package registers the commands of one topic; `common` holds what they share.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import re
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from sprc_lib.cli import data, evaluate, tools, training
from sprc_lib.cli.common import INTERRUPTED, USER_ERROR, with_flags
from sprc_lib.errors import UserError

COMMANDS = [*data.COMMANDS, *training.COMMANDS, *tools.COMMANDS, *evaluate.COMMANDS]  # the order of --help


class _Parser(argparse.ArgumentParser):
    """argparse, with a short error (one line and a hint, not the whole usage), a near flag suggested for a
    typo, and negative numbers in scientific notation read as numbers (`--learning-rate -1e-3`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d*\.?\d+[eE][-+]?\d+$")

    def parse_args(self, args=None, namespace=None):  # the command's parser names what it does not take
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            commands = [a for a in self._actions if isinstance(a, argparse._SubParsersAction)]
            owner = commands[0].choices[parsed.command] if commands and getattr(parsed, "command", None) else self
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            flags = [o for action in self._actions for o in action.option_strings]
            typos = [w for w in message.split(": ", 1)[-1].split() if w.startswith("--")]
            near = [m for t in typos if t not in flags for m in difflib.get_close_matches(t.split("=")[0], flags, n=1)]
            message += f" (did you mean {', '.join(near)}?)" if near else ""
        self.exit(2, f"error: {message} (`{self.prog} --help` lists the flags)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sprc_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a user's mistake is one line on stderr and exit code 2, a bug keeps its traceback."""
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    from sprc_lib.env import map_large_blocks  # here, not above: building the parser imports no torch

    map_large_blocks()  # a command at the real size holds gigabytes of tensors: freed ones go back
    try:
        with contextlib.redirect_stdout(_Flagged(sys.stdout)):
            return int(args.run(args) or 0)
    except UserError as err:
        if args.debug:
            raise
        print(f"error: {with_flags(str(err))}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return INTERRUPTED


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as a person reads them on a command line: one line, without the library's source."""
    print(f"warning: {with_flags(str(message))}", file=sys.stderr)


class _Flagged:
    """Standard output as the command line shows it: each setting the library's lines name, as its flag."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(with_flags(text))

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


