"""The notebooks' Colab install cell, declared once here and written into every notebook.

The cell runs before `sprc_lib` exists on a fresh Colab machine, so each notebook carries its own
copy; `write_install_cells()` (`make install-cells`) writes this template into them and a test
checks that every notebook's copy matches it. The source to install from is a git URL pinned to
the release tag of this version; `SPRC_COURSE_SOURCE` points the cell elsewhere (a fork, a branch,
a wheel file) without editing eight notebooks.
"""

from __future__ import annotations

import re
from pathlib import Path

from sprc_lib import __version__
from sprc_lib.paths import REPO_URL

COURSE_SOURCE = f"git+{REPO_URL}@v{__version__}"  # the pinned release the Colab cells install
CELL_MARK = "# Colab only: install the course library"  # the first line that identifies the cell

INSTALL_CELL = f'''{CELL_MARK} from one pinned source, then check it (about a minute).
import os
import subprocess
import sys

COURSE_SOURCE = os.environ.get("SPRC_COURSE_SOURCE", "{COURSE_SOURCE}")
COURSE_VERSION = "{__version__}"
if "google.colab" in sys.modules:
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"sprc-course[course] @ {{COURSE_SOURCE}}"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        raise SystemExit(f"installing the course from {{COURSE_SOURCE}} failed:\\n{{pip.stderr.strip()[-1500:]}}\\n"
                         "Fix: check that the source exists and the machine is online, then run this cell again.")
    try:
        import sprc_lib
    except ImportError as err:
        raise SystemExit(f"the course installed, but `import sprc_lib` fails ({{err}}). "
                         "Fix: Runtime > Restart session, then run this cell again.") from None
    if sprc_lib.__version__ != COURSE_VERSION:
        raise SystemExit(f"sprc_lib {{sprc_lib.__version__}} is installed; this notebook needs {{COURSE_VERSION}}. "
                         "Fix: Runtime > Restart session, then run this cell again.")
    print(f"sprc_lib {{sprc_lib.__version__}} installed from {{COURSE_SOURCE}}")'''

_CELL = re.compile(r"# %%\n" + re.escape(CELL_MARK) + r".*?(?=\n\n# %%)", re.S)


def install_cells(text: str) -> list[str]:
    """The install cells (their source) in one jupytext `.py` notebook."""
    return [match.group(0).removeprefix("# %%\n") for match in _CELL.finditer(text)]


def write_install_cells(notebooks: Path) -> list[Path]:
    """Write the template into every paired `.py` notebook under `notebooks`; returns the files changed."""
    changed = []
    for path in sorted(notebooks.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        new = _CELL.sub(lambda _: "# %%\n" + INSTALL_CELL, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed
