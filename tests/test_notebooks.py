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


END_SECTIONS = ["## Exercises", "## Questions", "## Key takeaways", "## Further reading"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_heading_scheme(path):
    """Title, badge, "What you will learn", numbered sections, then the same four closing sections in order."""
    nb = jupytext.read(path)
    first = nb.cells[0].source.splitlines()
    assert re.fullmatch(rf"# {path.name[:2]} · \S.*", first[0]), f"the first line should be '# {path.name[:2]} · Title'"
    assert first[1] == "" and first[2].startswith("[![Open In Colab]"), "the Colab badge goes right under the title"
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("## ")]
    assert headings[0] == "## What you will learn"
    numbered = [h for h in headings if re.match(r"## \d+\. ", h)]
    assert [int(h.split()[1][:-1]) for h in numbered] == list(range(1, len(numbered) + 1)), numbered
    assert headings[-len(END_SECTIONS):] == END_SECTIONS
    last = nb.cells[-1].source.strip().split("\n\n")[-1]
    assert last.startswith("**Next:**"), "Further reading ends with a **Next:** paragraph"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert not re.search(r"\bpart \d", text), "cross-references say 'section N'"


PAPER_URL = "https://arxiv.org/abs/2310.05473"
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_links_the_paper(path):
    assert PAPER_URL in path.read_text(), f"{path.name}: link the SPRC paper ({PAPER_URL})"


def test_the_tours_map_lists_every_notebook_and_counts_them_right():
    tour = "\n".join(c.source for c in jupytext.read(NOTEBOOKS[0]).cells if c.cell_type == "markdown")
    rows = re.findall(r"^\| \*\*(\d\d) ", tour, flags=re.MULTILINE)
    assert rows == [p.name[:2] for p in NOTEBOOKS], "00's map should have one row per notebook, in order"
    counts = re.findall(r"\b(\w+) notebooks\b", tour)
    assert f"{NUMBER_WORDS[len(NOTEBOOKS)]}" in counts and not set(counts) & (set(NUMBER_WORDS) - {
        NUMBER_WORDS[len(NOTEBOOKS)]}), f"00 counts its notebooks as {counts}"
