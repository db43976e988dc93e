"""Toy CIRR and FashionIQ in the exact released layouts, drawn so that every caption is true.

`toy_specs(seed, size)` decides everything (scenes, garments, names, captions, canvas sizes) without
drawing, so tests and notebooks can regenerate the ground truth; `generate_toy_data` draws and
writes it. Both are deterministic for a seed.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sprc_lib.data.errors import DataError
from sprc_lib.data.schema import (
    CIRR_DIR,
    CIRR_SPLITS,
    CIRR_SPLITS_WITH_TARGETS,
    FASHIONIQ_CATEGORIES,
    FASHIONIQ_DIR,
    FASHIONIQ_SPLITS,
    FASHIONIQ_SPLITS_WITH_TARGETS,
    cirr_caption_path,
    cirr_split_path,
    fashioniq_caption_path,
    fashioniq_image_dir,
    fashioniq_split_path,
)
from sprc_lib.data.toy import cirr as toy_cirr
from sprc_lib.data.toy import fashioniq as toy_fashioniq
from sprc_lib.data.toy import scenes as toy_scenes
from sprc_lib.progress import tqdm

MARKER = ".toy-data.json"  # written last; its presence means the folder is ours to overwrite
PARTIAL = ".toy-data.partial"  # written first, removed last: a build stopped half-way is ours to redo
PRETRAINING = "pretraining_captions.json"  # image-text pairs for the tiny BLIP-2's stage-1 pretraining


@dataclass(frozen=True)
class ToySize:
    cirr_sets: dict[str, int]  # 6-image sets per CIRR split
    fiq_train_queries: int  # per category
    fiq_eval_images: int  # val/test gallery per category
    fiq_eval_queries: int


SIZES = {
    "small": ToySize({"train": 300, "val": 60, "test1": 60}, 800, 760, 190),
    "medium": ToySize({"train": 1050, "val": 210, "test1": 210}, 2800, 2640, 660),
}


@dataclass(frozen=True)
class ToySplit:
    """One split's images (with the attributes they show) and queries (with their true targets)."""

    images: list
    queries: list


@dataclass(frozen=True)
class ToySpecs:
    seed: int
    size: str
    cirr: dict[str, ToySplit]  # by split
    fashioniq: dict[tuple[str, str], ToySplit]  # by (category, split)


def toy_specs(seed: int = 0, size: str = "small") -> ToySpecs:
    """Everything the toy datasets hold, except pixels. Each part has its own RNG stream."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}; got {size!r}")
    preset = SIZES[size]
    cirr: dict[str, ToySplit] = {}
    next_pair_id = 0
    for split in CIRR_SPLITS:
        rng = random.Random(f"{seed}:cirr:{split}")
        images, queries = toy_cirr.generate_split(split, preset.cirr_sets[split], next_pair_id, rng)
        next_pair_id += len(queries)
        cirr[split] = ToySplit(images, queries)
    fashioniq: dict[tuple[str, str], ToySplit] = {}
    used: set[str] = set()
    for category in FASHIONIQ_CATEGORIES:
        for split in FASHIONIQ_SPLITS:
            rng = random.Random(f"{seed}:fashioniq:{category}:{split}")
            if split == "train":
                images, queries = toy_fashioniq.generate_train(category, preset.fiq_train_queries, rng, used)
            else:
                images, queries = toy_fashioniq.generate_eval(
                    category, preset.fiq_eval_images, preset.fiq_eval_queries, rng, used
                )
            fashioniq[(category, split)] = ToySplit(images, queries)
    return ToySpecs(seed, size, cirr, fashioniq)


def pretraining_corpus(specs: ToySpecs) -> list[dict[str, str]]:
    """Absolute captions of every training image, paths relative to the toy root.

    The paper starts from BLIP-2, pretrained on web image-text pairs; the tiny model has no such
    checkpoint, so it is pretrained on these pairs first (`python -m sprc_lib pretrain-tiny`).
    Only training images: validation and test images stay unseen, as they are for BLIP-2.
    """
    rng = random.Random(f"{specs.seed}:pretraining")
    corpus = [
        {"image": f"{CIRR_DIR}/{image.relpath.removeprefix('./')}", "caption": toy_scenes.describe(image.scene, rng)}
        for image in specs.cirr["train"].images
    ]
    for category in FASHIONIQ_CATEGORIES:
        corpus += [
            {"image": f"{FASHIONIQ_DIR}/images/{image.name}.png", "caption": toy_fashioniq.describe(image.garment, rng)}
            for image in specs.fashioniq[(category, "train")].images
        ]
    return corpus


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _clear(out: Path) -> None:
    """Remove a previous toy dataset, but never a folder or file this generator did not write."""
    if out.exists() and not out.is_dir():
        raise DataError(f"`out` {out}: that is a file; choose a folder for the toy data, e.g. data/toy.")
    ours = [out / CIRR_DIR, out / FASHIONIQ_DIR, out / PRETRAINING]
    found = [p.name for p in ours if p.exists()]
    if found and not ((out / MARKER).is_file() or (out / PARTIAL).is_file()):
        raise DataError(
            f"{out} already holds {', '.join(found)} that toy-data did not write (no {MARKER}); "
            f"refusing to overwrite them. Choose another `out`, e.g. data/toy."
        )
    for p in ours[:2]:
        shutil.rmtree(p, ignore_errors=True)
    (out / PRETRAINING).unlink(missing_ok=True)
    (out / MARKER).unlink(missing_ok=True)


def generate_toy_data(out: Path, seed: int = 0, size: str = "small") -> dict:
    """Draw and write both toy datasets under `out` (the folder that will contain `cirr_dataset/`
    and `fashionIQ_dataset/`); returns a summary with counts and the time taken."""
    start = time.perf_counter()
    out = Path(out)
    _clear(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTIAL).touch()
    specs = toy_specs(seed, size)
    summary: dict[str, Any] = {"root": str(out), "seed": seed, "size": size, "cirr": {}, "fashioniq": {}}

    n_images = sum(len(s.images) for s in [*specs.cirr.values(), *specs.fashioniq.values()])
    bar = tqdm(total=n_images, desc="drawing toy images", unit="img")
    for split, part in specs.cirr.items():
        for image in part.images:
            path = out / CIRR_DIR / image.relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            toy_scenes.render(image.scene, image.look).save(path, compress_level=1)
            bar.update()
        _write_json(cirr_split_path(out, split), {image.name: image.relpath for image in part.images})
        with_target = split in CIRR_SPLITS_WITH_TARGETS
        _write_json(
            cirr_caption_path(out, split), [toy_cirr.query_record(q, with_target) for q in part.queries]
        )
        summary["cirr"][split] = {"triplets": len(part.queries), "images": len(part.images)}

    image_dir = fashioniq_image_dir(out)
    image_dir.mkdir(parents=True, exist_ok=True)
    for (category, split), part in specs.fashioniq.items():
        for image in part.images:
            toy_fashioniq.render(image.garment, image.look).save(
                image_dir / f"{image.name}.png", compress_level=1
            )
            bar.update()
        _write_json(fashioniq_split_path(out, category, split), [image.name for image in part.images])
        with_target = split in FASHIONIQ_SPLITS_WITH_TARGETS
        records = [toy_fashioniq.query_record(q, with_target) for q in part.queries]
        _write_json(fashioniq_caption_path(out, category, split), records)
        counts = {"triplets": len(part.queries), "images": len(part.images)}
        summary["fashioniq"].setdefault(category, {})[split] = counts
    bar.close()
    corpus = pretraining_corpus(specs)
    _write_json(out / PRETRAINING, corpus)
    summary["pretraining_pairs"] = len(corpus)

    summary["seconds"] = round(time.perf_counter() - start, 2)
    _write_json(out / MARKER, summary)
    (out / PARTIAL).unlink()
    return summary


def is_complete(root: str | Path) -> bool:
    """Whether `root` holds a finished toy build (not one stopped half-way)."""
    return (Path(root) / MARKER).is_file() and not (Path(root) / PARTIAL).exists()
