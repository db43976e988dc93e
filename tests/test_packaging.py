"""environment.yml describes the same environment as pyproject.toml, for conda users."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]


def name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_names_the_pyproject_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {name(r) for r in project["dependencies"]}
    for extra in ("course", "test"):
        wanted |= {name(r) for r in project["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {name(r) for r in pip if not r.startswith("-e")}
    assert listed == wanted
    assert "-e ." in pip
    specs = {name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}
    for requirement in project["dependencies"]:
        assert specs[name(requirement)] == requirement.replace(" ", ""), requirement


def test_torch_is_not_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = [r for r in project["dependencies"] if name(r) == "torch"]
    assert torch and "==" not in torch[0]
