"""Where things live, resolved from the repository root so a notebook's working directory never matters."""

from __future__ import annotations

import os
from pathlib import Path

import sprc_lib

# Where the course is published: Colab badges and the Colab install cells point here.
REPO_URL = "https://github.com/sprc-course/sprc-course"


def repo_root() -> Path:
    """The checkout that holds `sprc_lib` (editable installs, Colab clones), else the working directory."""
    here = Path(sprc_lib.__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def data_root() -> Path:
    """Datasets live here: `$SPRC_DATA` if set, else `<repo>/data`."""
    env = os.environ.get("SPRC_DATA")
    return Path(env).expanduser() if env else repo_root() / "data"


def toy_root() -> Path:
    """The generated toy datasets (`make toy` or `python -m sprc_lib toy-data`)."""
    return data_root() / "toy"
