"""Facts about the real CIRR and FashionIQ releases: folder layout, record schemas, sizes.

Everything here is written down from the datasets' own repositories (CIRR `Cuberick-Orion/CIRR`,
FashionIQ `XiaoxiaoGuo/fashion-iq`) so the loaders, the toy generator, `check-data` and the tests
all agree on one description of "the real layout".
"""

from __future__ import annotations

from pathlib import Path

# The two datasets, spelled as the seed's `--dataset` flag and every table and key of this library spell them.
DATASETS = ("CIRR", "FashionIQ")

CIRR_DIR = "cirr_dataset"
FASHIONIQ_DIR = "fashionIQ_dataset"

CIRR_SPLITS = ("train", "val", "test1")
CIRR_SPLITS_WITH_TARGETS = ("train", "val")
# The val images live in `dev/`, an NLVR2 name the split files keep.
CIRR_IMAGE_FOLDERS = {"train": "train", "val": "dev", "test1": "test1"}
CIRR_TRAIN_SUBFOLDERS = 100
CIRR_SET_SIZE = 6

FASHIONIQ_SPLITS = ("train", "val", "test")
FASHIONIQ_SPLITS_WITH_TARGETS = ("train", "val")
FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
# The dataset's tools write .jpg; the SPRC loader opens .png. Both are accepted, .png first.
FASHIONIQ_IMAGE_SUFFIXES = (".png", ".jpg")

# How the authors' code prepares both datasets' images: TargetPad, padding images wider than 1.25:1 to that ratio.
TRANSFORM, TARGET_RATIO = "targetpad", 1.25


def check_root(root: str | Path, dataset: str) -> None:
    """`root` must be a folder holding the dataset's folder (`cirr_dataset/` or `fashionIQ_dataset/`): said at
    once, before a model loads, with what to do."""
    from sprc_lib.data.errors import DataError

    root, folder = Path(root), CIRR_DIR if dataset == "CIRR" else FASHIONIQ_DIR
    if not root.exists():
        raise DataError(f"`data_path` {root}: no such folder; pass the folder that contains {folder}/ "
                        "(see data/README.md), or generate toy data with `python -m sprc_lib toy-data`")
    if not root.is_dir():
        raise DataError(f"`data_path` {root}: that is a file; pass the folder that contains {folder}/")
    if not (root / folder).is_dir():
        raise DataError(f"`data_path` {root}: has no {folder}/; pass the folder that contains it (see data/README.md)")


def cirr_caption_path(root: Path, split: str) -> Path:
    return Path(root) / CIRR_DIR / "cirr" / "captions" / f"cap.rc2.{split}.json"


def cirr_split_path(root: Path, split: str) -> Path:
    return Path(root) / CIRR_DIR / "cirr" / "image_splits" / f"split.rc2.{split}.json"


def fashioniq_caption_path(root: Path, category: str, split: str) -> Path:
    return Path(root) / FASHIONIQ_DIR / "captions" / f"cap.{category}.{split}.json"


def fashioniq_split_path(root: Path, category: str, split: str) -> Path:
    return Path(root) / FASHIONIQ_DIR / "image_splits" / f"split.{category}.{split}.json"


def fashioniq_image_dir(root: Path) -> Path:
    return Path(root) / FASHIONIQ_DIR / "images"


# (triplets, images) per split of the real releases.
CIRR_REAL_COUNTS = {
    "train": (28_225, 16_939),
    "val": (4_181, 2_297),
    "test1": (4_148, 2_315),
}
FASHIONIQ_REAL_COUNTS = {
    ("dress", "train"): (5_985, 11_452),
    ("dress", "val"): (2_017, 3_817),
    ("dress", "test"): (2_024, 3_818),
    ("shirt", "train"): (5_988, 19_036),
    ("shirt", "val"): (2_038, 6_346),
    ("shirt", "test"): (2_038, 6_346),
    ("toptee", "train"): (6_027, 16_121),
    ("toptee", "val"): (1_961, 5_373),
    ("toptee", "test"): (2_056, 5_374),
}
