"""Where things live: one data home for everything the library writes, so nothing lands in site-packages.

- `home()`: `$SPRC_HOME` if set; else the checkout that holds `sprc_lib` (a clone, an editable
  install); else `./sprc-data` beside the working directory (the package installed as a wheel).
- `data_root()`: the datasets, `$SPRC_DATA` if set, else `<home>/data`.
- `toy_root()`: the generated toy datasets and the tiny models, `<home>/data/toy`.
- `runs_root()`: training run folders, `<home>/runs`.
"""

from __future__ import annotations

import os
from pathlib import Path

import sprc_lib

# Where the course is published: Colab badges and the Colab install cells point here.
REPO_URL = "https://github.com/sprc-course/sprc-course"


def checkout() -> Path | None:
    """The source checkout that holds `sprc_lib`, None when the package is installed (a wheel)."""
    here = Path(sprc_lib.__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() and (here / "sprc_lib").is_dir() else None


def home() -> Path:
    """The folder the library writes into (toy data, caches, runs), resolved as the module says."""
    env = os.environ.get("SPRC_HOME")
    if env:
        return Path(env).expanduser()
    return checkout() or Path.cwd() / "sprc-data"


def data_root() -> Path:
    """Datasets live here: `$SPRC_DATA` if set, else `<home>/data`."""
    env = os.environ.get("SPRC_DATA")
    return Path(env).expanduser() if env else home() / "data"


def toy_root() -> Path:
    """The generated toy datasets (`make toy` or `python -m sprc_lib toy-data`)."""
    return home() / "data" / "toy"


def runs_root() -> Path:
    """Training runs without an `--output-dir`."""
    return home() / "runs"
