"""Shared fixtures. The toy dataset is generated once per session (a few seconds) and reused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from sprc_lib.data.toy import ToySpecs, generate_toy_data, toy_specs

TOY_SEED = 0
TOY_SIZE = "small"


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default toy dataset (seed 0, small): the folder holding cirr_dataset/ and fashionIQ_dataset/.

    Shared by the whole session: never modify it; take `toy_copy` instead.
    """
    root = tmp_path_factory.mktemp("toy")
    generate_toy_data(root, seed=TOY_SEED, size=TOY_SIZE)
    return root


@pytest.fixture(scope="session")
def toy_spec() -> ToySpecs:
    """The ground truth behind `toy_root` (attributes, edits, true targets), regenerated without drawing."""
    return toy_specs(TOY_SEED, TOY_SIZE)


def _link_images(src: str, dst: str) -> None:
    if src.endswith((".png", ".jpg")):
        try:
            os.link(src, dst)
            return
        except OSError:  # another file system: fall back to copying
            pass
    shutil.copy2(src, dst)


@pytest.fixture
def toy_copy(toy_root: Path, tmp_path: Path) -> Path:
    """A private copy of the toy dataset that a test may break.

    Annotation files are real copies; images are hard links to the shared ones (a full copy of
    ~7,600 files is too slow per test). Deleting an image is fine; to damage or replace one,
    unlink it first and write a new file, never write into it.
    """
    dst = tmp_path / "toy"
    shutil.copytree(toy_root, dst, copy_function=_link_images)
    return dst


@pytest.fixture(scope="session")
def tiny_blip2(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BLIP-2 briefly pretrained on the toy corpus (a few steps: enough for the code paths, not to learn)."""
    from sprc_lib.training.pretrain import pretrain_tiny_blip2

    return pretrain_tiny_blip2(toy_root, tmp_path_factory.mktemp("tiny-blip2"), steps=3, batch_size=16)


SMALL_TRIPLETS = 192  # an epoch of 6 steps of 32 in one process, 3 steps of 2 x 32 in two


@pytest.fixture(scope="session")
def small_toy(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy CIRR with only its first training triplets (images hard-linked, never written)."""
    root = tmp_path_factory.mktemp("small-toy")
    shutil.copytree(toy_root / "cirr_dataset", root / "cirr_dataset", copy_function=os.link)
    captions = root / "cirr_dataset" / "cirr" / "captions" / "cap.rc2.train.json"
    kept = json.loads(captions.read_text())[:SMALL_TRIPLETS]
    captions.unlink()  # a hard link to the session's toy data: replace it, never write into it
    captions.write_text(json.dumps(kept))
    return root
