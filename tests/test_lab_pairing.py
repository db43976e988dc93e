"""Saving a notebook in JupyterLab updates its paired .py, however the server was started."""

from __future__ import annotations

import json

import pytest
from support.lab_server import copy_notebooks, lab_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAME = "00_setup_and_tour"
MARK = "A sentence a teacher added in the browser."


@pytest.mark.parametrize("root", ["notebooks", "repository"])
def test_a_save_through_the_contents_api_updates_the_py(tmp_path, root):
    """`make lab` roots the server at notebooks/; a teacher may also start it one folder up."""
    notebooks = copy_notebooks(tmp_path / "course" / "notebooks")
    served = notebooks if root == "notebooks" else notebooks.parent
    prefix = "" if root == "notebooks" else "notebooks/"
    with lab_server(served, tmp_path / "lab.log") as lab:
        model = json.loads(lab.api(f"contents/{prefix}{NAME}.ipynb?content=1"))
        cells = model["content"]["cells"]
        cells[0]["source"] = cells[0]["source"] + "\n\n" + MARK
        lab.api(f"contents/{prefix}{NAME}.ipynb", "PUT",
                json.dumps({"type": "notebook", "format": "json", "content": model["content"]}).encode())
    paired = (notebooks / f"{NAME}.py").read_text()
    assert f"# {MARK}" in paired, "the .py beside the notebook was not updated on save"
    assert MARK in (notebooks / f"{NAME}.ipynb").read_text()
