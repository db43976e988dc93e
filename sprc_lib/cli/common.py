"""What the command modules share: exit codes, the flags every command takes, the seed's model name, the data
folder and preset the seed's commands imply."""

from __future__ import annotations

import argparse
from pathlib import Path

from sprc_lib.errors import UserError

SEED_MODEL_NAME = "blip2_cir_align_prompt"

# Exit codes: a user's mistake, and a run stopped by Ctrl-C or by the termination signal (128 + signal).
USER_ERROR, INTERRUPTED, TERMINATED = 2, 130, 143


def command(sub: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    """A sub-command, with the flags every one takes."""
    p = sub.add_parser(name, help=text)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error (for a bug report)")
    return p


def blip_model_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--blip-model-name", default=SEED_MODEL_NAME, help="kept for the seed's commands; only "
                   f"{SEED_MODEL_NAME} (SPRC) exists here")


def check_model_name(args: argparse.Namespace) -> None:
    if args.blip_model_name != SEED_MODEL_NAME:
        raise UserError(f"--blip-model-name {args.blip_model_name}: this library implements only "
                        f"{SEED_MODEL_NAME} (SPRC); drop the flag or pass that name")


def data_and_preset(data_path: str | Path | None, preset: str | None, dataset: str) -> tuple[str, str]:
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


