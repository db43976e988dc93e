"""A rehearsal of the full track at the real model size, before a GPU is rented: `make rehearse`.

It builds stand-ins at BLIP-2 ViT-g's real sizes with random weights, in the real formats: a
`Salesforce/blip2-itm-vit-g`-layout folder (with a tokenizer of BLIP-2's vocabulary size), the authors'
released-file layout (`save_lavis_checkpoint`), and a mini CIRR of real-resolution images cut from the toy
data. It then runs full-track commands on them, each in its own process, and writes one row per command:
exit code, peak host memory (the process tree's largest resident set), wall time and the disk its outputs
take, with a verdict against a free Colab session. Random weights score nothing: the rehearsal is about
memory, time, files and messages, never about metrics.

    python -m sprc_lib.course.rehearse OUT        # what `make rehearse` runs (OUT: build/rehearsal)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import BertTokenizer, Blip2ForImageTextRetrieval

from sprc_lib.course.toy_track import ensure_toy
from sprc_lib.data.schema import CIRR_DIR
from sprc_lib.errors import UserError
from sprc_lib.model.config import blip2_config, blip2_vitg_config
from sprc_lib.model.lavis import save_lavis_checkpoint
from sprc_lib.model.loading import BLIP2_VOCABULARY, load_model
from sprc_lib.model.tokenizer import BOS_TOKEN, SPECIAL_TOKENS, load_tokenizer
from sprc_lib.tables import format_table

COLAB_RAM_GB = 12.7  # a free Colab session's host memory
TARGET_RAM_GB = 9.0  # what a full-track command may peak at, leaving room for the kernel and loader workers
IMAGE_SIZE = (640, 480)  # a typical CIRR image
CUT = {"train": 16, "val": 8, "test1": 8}  # triplets kept per CIRR split


@dataclass
class Row:
    """One command of the rehearsal, as it ran."""

    name: str
    code: int
    peak_gb: float
    seconds: float
    disk_gb: float

    def verdict(self) -> str:
        if self.code != 0:
            return "FAILED"
        if self.peak_gb > COLAB_RAM_GB:
            return "ends a free Colab session"
        return "fits" if self.peak_gb <= TARGET_RAM_GB else f"fits, above {TARGET_RAM_GB:g} GB"


def blip2_tokenizer(out: Path) -> BertTokenizer:
    """A BertTokenizer of BLIP-2's size (bert-base-uncased's 30,522 entries and [DEC]): the toy words, then
    placeholders. The hub's vocabulary needs the network; the embedding table's size is what matters here."""
    toy = [t for t in (ensure_toy() / "tiny-blip2" / "vocab.txt").read_text().split() if t != BOS_TOKEN]
    words = [*SPECIAL_TOKENS, *(t for t in toy if t not in SPECIAL_TOKENS)]
    vocab = words + [f"[unused{i}]" for i in range(BLIP2_VOCABULARY - 1 - len(words))]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(str(out))
    tokenizer = load_tokenizer(out)  # with [DEC]
    assert len(tokenizer) == BLIP2_VOCABULARY, len(tokenizer)
    return tokenizer


def real_size_blip2(out: Path, seed: int = 0) -> Path:
    """A BLIP-2 retrieval model at ViT-g's sizes with random weights, saved as the hub's folder is laid out."""
    sizes = blip2_vitg_config(BLIP2_VOCABULARY)
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(blip2_config(sizes))
    model.save_pretrained(str(out))
    blip2_tokenizer(out)
    return out


def _cut(captions: list[dict], split: str) -> tuple[list[dict], set[str]]:
    kept = captions[: CUT[split]]
    names = {t["reference"] for t in kept} | {t["target_hard"] for t in kept if "target_hard" in t}
    names |= {m for t in kept for m in t["img_set"]["members"]}
    return kept, names


def mini_cirr(out: Path) -> Path:
    """The toy CIRR cut to a few triplets per split, their images at a real CIRR image's resolution (PNG)."""
    toy = ensure_toy() / CIRR_DIR
    root = out / CIRR_DIR
    for split in CUT:
        captions = json.loads((toy / "cirr" / "captions" / f"cap.rc2.{split}.json").read_text())
        images = json.loads((toy / "cirr" / "image_splits" / f"split.rc2.{split}.json").read_text())
        kept, names = _cut(captions, split)
        if split == "test1":  # the submission's top 50 needs a gallery of more than 50 images
            names |= set(sorted(images)[:60])
        for folder in ("captions", "image_splits"):
            (root / "cirr" / folder).mkdir(parents=True, exist_ok=True)
        (root / "cirr" / "captions" / f"cap.rc2.{split}.json").write_text(json.dumps(kept))
        (root / "cirr" / "image_splits" / f"split.rc2.{split}.json").write_text(
            json.dumps({n: images[n] for n in sorted(names)}))
        for name in names:
            target = root / images[name]
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(toy / images[name]) as image:
                image.convert("RGB").resize(IMAGE_SIZE, Image.Resampling.BICUBIC).save(target)
    return out


def build(out: Path) -> dict[str, Path]:
    """Every stand-in under `out` (kept between runs: building them takes minutes)."""
    paths = {"blip2": out / "blip2-itm-vit-g", "released": out / "checkpoints" / "sprc_cirr.pt", "data": out / "data"}
    if not (paths["blip2"] / "config.json").is_file():
        print("building a BLIP-2 ViT-g with random weights ...", flush=True)
        real_size_blip2(paths["blip2"])
    if not paths["released"].is_file():
        print("writing the released-file stand-in ...", flush=True)
        model = load_model(paths["blip2"])
        save_lavis_checkpoint(model, paths["released"])
        del model
    if not (paths["data"] / CIRR_DIR).is_dir():
        print("cutting the mini CIRR ...", flush=True)
        mini_cirr(paths["data"])
    return paths


# Runs `argv` and prints the peak resident set of its process tree (the largest child's, in kB, as the kernel
# counts it for waited-for children), so each command is measured in a process of its own.
MEASURE = "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); " \
          "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"


def _size_gb(paths: Iterable[Path]) -> float:
    files = [f for p in paths if p.exists() for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1e9


def measure(name: str, argv: list[str], outputs: list[Path], log: Path) -> Row:
    """Run one command in its own process; its output goes to `log`."""
    start = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "sprc_lib", *argv],
                              stdout=f, stderr=subprocess.PIPE, text=True)
        f.write(done.stderr)
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    row = Row(name, done.returncode, peak_kb / 1e6, time.perf_counter() - start, _size_gb(outputs))
    print(f"  {name}: exit {row.code}, peak {row.peak_gb:.1f} GB, {row.seconds:.0f} s", flush=True)
    return row


def commands(paths: dict[str, Path], work: Path) -> list[tuple[str, list[str], list[Path]]]:
    """(name, arguments, outputs) of each command rehearsed, in the order a user meets them."""
    data, blip2, released = str(paths["data"]), str(paths["blip2"]), str(paths["released"])
    cache, converted, run, rerank = work / "cache", work / "converted", work / "run", work / "reranker"
    common = ["--dataset", "CIRR", "--data-path", data, "--preset", "blip2-vitg", "--num-workers", "0"]
    train = [*common, "--model-path", blip2, "--batch-size", "4", "--num-epochs", "1", "--feature-cache", str(cache)]
    return [
        ("check-data", ["check-data", "--dataset", "CIRR", "--data-path", data], []),
        ("convert", ["convert", "--lavis-checkpoint", released, "--out", str(converted), "--preset", "blip2-vitg",
                     "--tokenizer", blip2], [converted]),
        ("validate --model-path <converted>", ["validate", *common, "--model-path", str(converted),
                                               "--tokenizer", blip2], []),
        ("train, 1 step from the cache", ["train", *train, "--output-dir", str(run), "--stop-after-steps", "1"],
         [run, cache]),
        ("train --resume, 1 step", ["train", "--resume", str(run), "--stop-after-steps", "1"], [run]),
        ("train-reranker, 1 step", ["train-reranker", *train, "--stage1-model", str(converted), "--output-dir",
                                    str(rerank), "--stop-after-steps", "1"], [rerank]),
    ]


MARK = ".sprc-rehearsal"  # in every folder the rehearsal writes: it never clears a folder without it


def rehearse(out: Path) -> list[Row]:
    if out.exists() and any(out.iterdir()) and not (out / MARK).exists():
        raise UserError(f"{out}: a folder the rehearsal did not make; give an empty or new folder "
                        "(make rehearse uses build/rehearsal)")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARK).touch()
    paths = build(out)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    rows = []
    for i, (name, argv, outputs) in enumerate(commands(paths, work)):
        rows.append(measure(name, argv, outputs, work / "logs" / f"{i:02d}.log"))
    return rows


def table(rows: list[Row]) -> str:
    return format_table(["command", "exit", "peak RSS (GB)", "wall (s)", "disk (GB)", "free Colab"], [
        [r.name, str(r.code), f"{r.peak_gb:.1f}", f"{r.seconds:.0f}", f"{r.disk_gb:.2f}", r.verdict()] for r in rows])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m sprc_lib.course.rehearse OUT", file=sys.stderr)
        return 2
    out = Path(argv[0])
    try:
        rows = rehearse(out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = table(rows)
    (out / "rehearsal.md").write_text(text + "\n")
    print(text)
    return 0 if all(r.code == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
