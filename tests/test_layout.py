"""The library's shape: the core never imports the courseware, nothing imports upward, no import circles."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from sprc_lib.paths import checkout

PACKAGE = checkout() / "sprc_lib"
# Each layer may import its own and the layers before it, never one after it.
LAYERS = [
    ("sprc_lib", "sprc_lib.paths", "sprc_lib.env", "sprc_lib.files", "sprc_lib.tables", "sprc_lib.distributed"),
    ("sprc_lib.data",),
    ("sprc_lib.model",),
    ("sprc_lib.features",),
    ("sprc_lib.evaluation",),
    ("sprc_lib.training",),
    ("sprc_lib.course", "sprc_lib.cli", "sprc_lib.__main__"),
]
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int:
    """The layer of a module: the longest prefix any layer names (`sprc_lib.data.toy` is data's)."""
    best = max((p for group in LAYERS for p in group if name == p or name.startswith(p + ".")), key=len)
    return next(i for i, group in enumerate(LAYERS) if best in group)


def sprc_imports(path: Path) -> set[str]:
    """Every `sprc_lib` module `path` imports, at any depth of the file (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sprc_lib")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sprc_lib"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if (PACKAGE.parent / node.module.replace(
                ".", "/") / f"{a.name}.py").is_file()}  # `from sprc_lib.course import figures`
    return found


def lazy_homes(path: Path) -> set[str]:
    """Modules a package's lazy `__getattr__` table names (string constants that are module paths)."""
    return {n.value for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("sprc_lib.")}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_a_later_layer(path):
    # The package itself is the core's public surface: importing it loads nothing (its names load lazily),
    # and its table may name every core module, never the course.
    here = layer("sprc_lib.training") if module_name(path) == "sprc_lib" else layer(module_name(path))
    upward = sorted(m for m in sprc_imports(path) | lazy_homes(path) if layer(m) > here)
    assert not upward, f"{module_name(path)} (layer {here}) imports {upward}"


def test_only_the_courseware_and_the_command_line_import_the_course():
    offenders = [module_name(p) for p in MODULES
                 if not module_name(p).startswith(("sprc_lib.course", "sprc_lib.cli"))
                 and any(m.startswith("sprc_lib.course") for m in sprc_imports(p) | lazy_homes(p))]
    assert offenders == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The import walk must be able to fail: a core module importing the course is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from sprc_lib.course.figures import CourseFigure\n")
    assert "sprc_lib.course.figures" in sprc_imports(bad) and layer("sprc_lib.course.figures") > layer("sprc_lib.data")


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """{module: the library's modules it imports}, lazy imports included."""
    names = {module_name(p) for p in paths}
    return {module_name(p): {m for m in sprc_imports(p) if m in names and m != module_name(p)} for p in paths}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by a depth-first walk, each as the modules around it."""
    found, state, stack = [], {}, []

    def walk(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return found


def test_no_module_imports_itself_round_a_circle():
    assert circles(import_graph(MODULES)) == []


def test_the_circle_check_sees_a_circle(tmp_path):
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def names_used(path: Path) -> set[str]:
    """Every name and attribute a module reads, and every string constant it holds."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
    return found


def test_the_optimisation_step_knows_no_model_by_its_losses_and_takes_four_arguments():
    """Each model declares its own `training_loss`: the step never dispatches on a loss's name."""
    from sprc_lib.model import SPRCModel
    from sprc_lib.model.rerank import RerankerModel
    from sprc_lib.training.step import optimizer_step

    step = PACKAGE / "training" / "step.py"
    strings = {n.value for n in ast.walk(ast.parse(step.read_text())) if isinstance(n, ast.Constant)}
    assert not strings & {*SPRCModel.loss_names, *RerankerModel.loss_names}  # no loss looked up by its name
    assert not sprc_imports(step) & {"sprc_lib.model.sprc", "sprc_lib.model.rerank"}
    assert len(inspect.signature(optimizer_step).parameters) <= 4
    for model in (SPRCModel, RerankerModel):
        assert "training_loss" in vars(model), model


# What decides the settings that depend on others (the starting weights, the recipe, the preset from the data,
# the re-ranking defaults): `training.config.resolve` reads them, and no other module of the training or the
# command line does.
DECIDERS = {"default_top_k", "default_fuse", "BLIP2_RETRIEVAL", "recipe_for", "MARKER"}


def test_the_settings_defaults_are_decided_in_one_place():
    modules = [*(PACKAGE / "training").glob("*.py"), *(PACKAGE / "cli").glob("*.py")]
    deciding = {module_name(p): found for p in modules if (found := names_used(p) & DECIDERS)}
    assert deciding == {"sprc_lib.training.config": DECIDERS}


FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def flags_outside_commands(path: Path) -> list[str]:
    """The `--flags` a module's `raise` statements name outside a command written in backticks."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Raise) and node.exc is not None:
            text = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            spans = [c for c in ast.walk(node.exc) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            joined = "".join(c.value for c in spans)
            outside = re.sub(r"`[^`]*`", "", joined)  # commands to run keep their flags
            found += [f"{path.stem} {f}" for f in FLAG.findall(outside)] if text else []
    return found


def test_the_library_names_settings_and_the_command_line_names_flags():
    """A core error names a setting (`data_path`); `python -m sprc_lib` shows it as its flag, from one table."""
    from sprc_lib.cli.common import FLAGS, with_flags

    core = [p for p in MODULES if not module_name(p).startswith(("sprc_lib.cli", "sprc_lib.course"))]
    # argparse shows a type's error itself, as a flag's
    assert [f for p in core for f in flags_outside_commands(p)] == ["config --dataset"]
    assert with_flags("`data_path` x: no such folder; run `python -m sprc_lib toy-data --out x`") == (
        "--data-path x: no such folder; run `python -m sprc_lib toy-data --out x`")
    assert FLAGS["stage1_model"] == "--stage1-model" and with_flags("`words`") == "`words`"


def test_the_flag_check_sees_a_flag(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(x):\n    raise ValueError(f"--data-path {x}: run `make models --x`")\n')
    assert [f.split()[-1] for f in flags_outside_commands(bad)] == ["--data-path"]
