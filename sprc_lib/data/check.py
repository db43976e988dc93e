"""`check-data` and the data tour: is a dataset folder usable, and what does it hold?

One report per split (and FashionIQ category), built by loading the split with the real dataset
classes, so the check accepts exactly what training will accept.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from sprc_lib.data.base import RetrievalDataset
from sprc_lib.data.cirr import CIRRDataset
from sprc_lib.data.errors import DataError
from sprc_lib.data.fashioniq import FashionIQDataset, index_images
from sprc_lib.data.records import load_cirr_split, load_fashioniq_split
from sprc_lib.data.schema import (
    CIRR_DIR,
    CIRR_REAL_COUNTS,
    CIRR_SPLITS,
    DATASETS,
    FASHIONIQ_CATEGORIES,
    FASHIONIQ_IMAGE_SUFFIXES,
    FASHIONIQ_REAL_COUNTS,
    FASHIONIQ_SPLITS,
    cirr_split_path,
    fashioniq_image_dir,
    fashioniq_split_path,
)
from sprc_lib.data.toy import MARKER as TOY_MARKER
from sprc_lib.progress import tqdm
from sprc_lib.tables import format_table

SHOWN = 5  # how many missing/unreadable files to list before giving the total


@dataclass
class SplitReport:
    """What one split (of one FashionIQ category) holds and what is wrong with it."""

    dataset: str
    split: str
    category: str | None
    real: tuple[int, int]  # (triplets, images) of the real release
    triplets: int = 0
    images: int = 0
    missing: list[str] = field(default_factory=list)
    dropped_triplets: int = 0
    unreadable: list[str] | None = None  # None: images were not decoded
    error: str | None = None

    @property
    def looks_real(self) -> bool:
        return self.images > self.real[1] / 2

    def usable(self, allow_missing: bool) -> bool:
        return self.error is None and not self.unreadable and (allow_missing or not self.missing)

    def status(self, allow_missing: bool) -> str:
        if self.error:
            return "ERROR"
        if self.unreadable:
            return "UNREADABLE"
        if self.missing:
            return "ok with `skip_missing`" if allow_missing else "MISSING IMAGES"
        return "ok"


def _open(dataset: str, root: Path, split: str, category: str | None) -> RetrievalDataset:
    """The split as training would load it, but keeping what is there (missing files are reported)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dataset == "CIRR":
            return CIRRDataset(root, split, "relative", skip_missing=True)
        return FashionIQDataset(root, split, [str(category)], "relative", skip_missing=True)


def _gallery_only(report: SplitReport, root: Path) -> None:
    """When the captions are unusable, still count the gallery and find its missing files."""
    try:
        if report.dataset == "CIRR":
            paths = [
                root / CIRR_DIR / rel for rel in load_cirr_split(cirr_split_path(root, report.split)).values()
            ]
            report.missing = [str(p) for p in paths if not p.is_file()]
            report.images = len(paths)
        else:
            names = load_fashioniq_split(fashioniq_split_path(root, str(report.category), report.split))
            image_dir = fashioniq_image_dir(root)
            files = index_images(image_dir)
            report.missing = [
                str(image_dir / (n + FASHIONIQ_IMAGE_SUFFIXES[0])) for n in names if n not in files
            ]
            report.images = len(names)
    except DataError:
        pass  # the split file itself is broken or absent: `error` already says what to fix


def _verify(ds: RetrievalDataset, bar: tqdm) -> list[str]:
    """Decode every image the split uses; slow on real data, hence the progress bar."""
    names = dict.fromkeys(ds.image_names)
    for triplet in ds.triplets:
        names.update(dict.fromkeys(ds.triplet_images(triplet)))
    bad = []
    bar.reset(total=len(names))
    bar.set_description(f"decoding {ds.name}")
    for name in names:
        try:
            ds.load_image(name)
        except DataError:
            bad.append(str(ds.image_path(name)))
        bar.update()
    return bad


def check_dataset(dataset: str, data_path: str | Path, verify_images: bool = False) -> list[SplitReport]:
    """Load every split (and category) of `dataset` under `data_path` and report on each."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
    root = Path(data_path)
    if dataset == "CIRR":
        parts = [(split, None, CIRR_REAL_COUNTS[split]) for split in CIRR_SPLITS]
    else:
        parts = [
            (s, c, FASHIONIQ_REAL_COUNTS[(c, s)]) for c in FASHIONIQ_CATEGORIES for s in FASHIONIQ_SPLITS
        ]
    reports = []
    bar = tqdm(disable=not verify_images, unit="img")
    for split, category, real in parts:
        report = SplitReport(dataset, split, category, real)
        try:
            ds = _open(dataset, root, split, category)
        except DataError as err:
            report.error = str(err)
            _gallery_only(report, root)
        else:
            report.triplets, report.images = ds.listed_triplets, ds.listed_images
            report.missing = [str(ds.image_path(name)) for name in ds.missing_images]
            report.dropped_triplets = ds.dropped_triplets
            if verify_images:
                report.unreadable = _verify(ds, bar)
        reports.append(report)
    bar.close()
    return reports


def format_reports(reports: list[SplitReport], root: str | Path, allow_missing: bool = False) -> str:
    """A small table (one row per split) followed by what is wrong, first few files and totals."""
    dataset = reports[0].dataset
    real = not (Path(root) / TOY_MARKER).is_file() and any(r.looks_real for r in reports)
    headers = ["split"] + (["category"] if dataset == "FashionIQ" else []) + ["triplets", "images", "missing"]
    headers += ["unreadable"] if reports[0].unreadable is not None else []
    headers += ["real triplets", "real images"] if real else []
    headers += ["status"]
    rows = []
    for r in reports:
        row = [r.split] + ([str(r.category)] if dataset == "FashionIQ" else [])
        row += [f"{r.triplets:,}", f"{r.images:,}", f"{len(r.missing):,}"]
        row += [f"{len(r.unreadable):,}"] if r.unreadable is not None else []
        row += [f"{r.real[0]:,}", f"{r.real[1]:,}"] if real else []
        rows.append([*row, r.status(allow_missing)])
    text = [f"{dataset} under {root}" + ("" if real else " (toy-sized: not compared with the real counts)")]
    text.append(format_table(headers, rows))
    for r in reports:
        where = f"{r.dataset} {r.split}" + (f" {r.category}" if r.category else "")
        if r.error:
            text.append(f"{where}: {r.error}")
        for label, paths in (("missing", r.missing), ("unreadable", r.unreadable or [])):
            if paths:
                more = f" (and {len(paths) - SHOWN} more)" if len(paths) > SHOWN else ""
                text.append(f"{where}: {len(paths)} {label} image(s): {', '.join(paths[:SHOWN])}{more}")
        if r.missing and r.dropped_triplets:
            text.append(
                f"{where}: `skip_missing` would drop {r.dropped_triplets} triplet(s) that use them"
            )
    return "\n".join(text)


def run_check(
    dataset: str, data_path: str | Path, verify_images: bool = False, allow_missing: bool = False
) -> int:
    """Print the report; 0 only when every split is usable (missing images allowed if asked)."""
    reports = check_dataset(dataset, data_path, verify_images)
    print(format_reports(reports, data_path, allow_missing))
    return 0 if all(r.usable(allow_missing) for r in reports) else 1


def data_tour(data_path: str | Path) -> int:
    """Both datasets' summary tables: the course's main job until the notebooks exist."""
    codes = []
    for dataset in DATASETS:
        codes.append(run_check(dataset, data_path))
        print()
    return max(codes)
