"""Every notebook is a clean jupytext pair: same cells in .ipynb and .py, nothing executed committed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import pytest

from sprc_lib.paths import REPO_URL

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
PAIRED = sorted((Path(__file__).parents[1] / "notebooks").glob("*.py"))


def sources(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_every_notebook_has_both_halves():
    assert {p.stem for p in NOTEBOOKS} == {p.stem for p in PAIRED}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ipynb_and_py_hold_the_same_cells(path):
    assert sources(jupytext.read(path)) == sources(jupytext.read(path.with_suffix(".py"))), (
        f"{path.name} and its .py differ: run `jupytext --sync {path.with_suffix('.py')}`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean(path):
    raw = path.read_text()
    nb = json.loads(raw)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip the outputs"
    assert "widgets" not in nb.get("metadata", {}), "strip the saved widget state"
    # Colab's own folders (/content/data, /content/drive) are instructions; any other absolute path is a machine's
    assert not re.search(r"/(work|root|tmp|home|Users)/", raw), "a machine path is committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_badge_install_and_parameters(path):
    nb = jupytext.read(path)
    text = "\n".join(cell.source for cell in nb.cells)
    badge = f"https://colab.research.google.com/github/{REPO_URL.removeprefix('https://github.com/')}/blob/main/notebooks/{path.name}"
    assert badge in text, f"Colab badge should link to {badge}"
    assert any("google.colab" in c.source and c.cell_type == "code" for c in nb.cells), "no Colab-only install cell"
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), "no cell tagged 'parameters'"
