"""The package as Colab and pip users get it: a wheel installed outside the checkout, and the notebooks'
Colab install cell run against it.

Each venv sees the checkout venv's packages (torch and the rest) through a `.pth` file pointing at a folder
of links to them, leaving out this project's own editable install, so only the wheel provides `sprc_lib`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from sprc_lib import __version__
from sprc_lib.course.colab import INSTALL_CELL, install_cells
from sprc_lib.paths import checkout

REPO = checkout()
OWN = ("sprc_course", "__editable__", "sprc_lib")  # this project's entries in the checkout's venv


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python*/site-packages"))


def _venv(where: Path) -> Path:
    """A fresh venv that sees the checkout venv's third-party packages but not this project."""
    subprocess.run([sys._base_executable, "-m", "venv", str(where)], check=True, capture_output=True)
    # its own (older) setuptools would hide the checkout venv's, which torch requires
    subprocess.run([str(where / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", "setuptools"],
                   capture_output=True, env=_clean_env())
    deps = where.parent / f"{where.name}-deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(OWN) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    (_site_packages(where) / "checkout_deps.pth").write_text(f"{deps}\n")
    return where


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPRC_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(out)], check=True,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, timeout=600)
    (built,) = out.glob("sprc_course-*.whl")
    return built


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.slow
def test_the_wheel_works_outside_the_checkout_and_writes_beside_the_working_directory(wheel, tmp_path):
    venv = _venv(tmp_path / "venv")
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=_clean_env())
    site = _site_packages(venv)
    before = _files(site)
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([python, "-m", "sprc_lib", *args], cwd=work, env=_clean_env(), capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        return done

    where = subprocess.run([python, "-c", "import sprc_lib; print(sprc_lib.__file__)"], cwd=work, env=_clean_env(),
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the wheel's copy, not the checkout's
    assert "toy-data" in run("--help").stdout
    run("toy-data")
    toy = work / "sprc-data" / "data" / "toy"  # the data home beside the working directory
    assert (toy / "cirr_dataset").is_dir() and (toy / "fashionIQ_dataset").is_dir()
    run("check-data", "--dataset", "CIRR", "--data-path", str(toy))
    fits = f"from sprc_lib.course.shipped import shipped; print([shipped(n, {str(toy)!r}) is not None for n in " \
           "('tiny-blip2', 'CIRR', 'FashionIQ')])"
    shipped = subprocess.run([python, "-c", fits], cwd=work, env=_clean_env(), capture_output=True, text=True)
    assert shipped.stdout.strip() == "[True, True, True]", shipped.stderr[-2000:]  # the wheel carries the tiny track
    run("train", "--dataset", "CIRR", "--data-path", str(toy), "--model-path", str(REPO / "data/toy/tiny-blip2"),
        "--batch-size", "4", "--num-workers", "0", "--stop-after-steps", "1")
    (run_dir,) = (work / "sprc-data" / "runs").iterdir()  # a run without --output-dir lands in the data home
    assert (run_dir / "checkpoint.pt").is_file()
    assert _files(site) == before, "the library wrote into site-packages"


@pytest.mark.slow
def test_the_colab_install_cell_installs_checks_and_explains_a_failure(wheel, tmp_path):
    cells = {path.name: install_cells(path.read_text()) for path in sorted((REPO / "notebooks").glob("*.py"))}
    assert cells and all(found == [INSTALL_CELL] for found in cells.values()), (
        "a notebook's install cell differs from sprc_lib.course.colab.INSTALL_CELL: run `make install-cells`")
    venv = _venv(tmp_path / "venv")
    colab = "import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n"

    def cell(source: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "python"), "-c", colab + INSTALL_CELL], cwd=tmp_path, timeout=600,
                              env=_clean_env(SPRC_COURSE_SOURCE=source), capture_output=True, text=True)

    missing = cell((tmp_path / "nowhere" / wheel.name).as_uri())
    assert missing.returncode == 1 and "Fix:" in missing.stderr and "Traceback" not in missing.stderr, missing.stderr
    assert "ModuleNotFoundError" not in missing.stderr
    done = cell(wheel.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"sprc_lib {__version__} installed from {wheel.as_uri()}"
