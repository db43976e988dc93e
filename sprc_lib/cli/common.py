"""What the command modules share: exit codes, the flags every command takes, the seed's model name, and the
table from the settings the library's messages name to the flags the commands take."""

from __future__ import annotations

import argparse
import re

from sprc_lib.errors import UserError
from sprc_lib.training.config import field_names

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


# The one table from a setting, as the library's messages name it (`data_path`), to the flag a command takes for it.
FLAGS = {name: "--" + name.replace("_", "-")
         for name in (*field_names(), "resume", "stop_after_steps", "overwrite", "out", "rerank_model")}


def with_flags(message: str) -> str:
    """A library message as a command-line user reads it: each setting it names, as its flag."""
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: FLAGS.get(m.group(1), m.group(0)), message)
