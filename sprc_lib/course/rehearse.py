"""A rehearsal of the full track at the real model size, before a GPU is rented: `make rehearse`.

It builds stand-ins at BLIP-2 ViT-g's real sizes with random weights, in the real formats: a
`Salesforce/blip2-itm-vit-g`-layout folder (with a tokenizer of BLIP-2's vocabulary size), the authors'
released-file layout (`save_lavis_checkpoint`), a re-ranker saved as a run's `best/` is, and a mini CIRR and
FashionIQ of real-resolution images cut from the toy data. It then runs the full-track commands on them, each in its
own process, and writes one row per command: exit code, peak host memory (the process tree's largest
resident set), wall time and the disk its outputs take, with a verdict against a free Colab session.
Random weights score nothing: the rehearsal is about memory, time, files and messages, never metrics.

    python -m sprc_lib.course.rehearse OUT        # what `make rehearse` runs (OUT: build/rehearsal)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import torch
from PIL import Image
from transformers import BertTokenizer, Blip2ForImageTextRetrieval

from sprc_lib.course.reference import write_block
from sprc_lib.course.toy_track import ensure_toy
from sprc_lib.data.schema import CIRR_DIR, FASHIONIQ_CATEGORIES, FASHIONIQ_DIR
from sprc_lib.errors import UserError
from sprc_lib.model.config import blip2_config, blip2_vitg_config
from sprc_lib.model.lavis import save_lavis_checkpoint
from sprc_lib.model.loading import BLIP2_VOCABULARY, load_model
from sprc_lib.model.rerank import reranker_from_retrieval
from sprc_lib.model.tokenizer import BOS_TOKEN, SPECIAL_TOKENS, load_tokenizer
from sprc_lib.tables import format_table
from sprc_lib.training.disk import run_disk
from sprc_lib.training.tiny_layout import TINY_BLIP2, model_folder

COLAB_RAM_GB = 12.7  # a free Colab session's host memory
COLAB_DISK_GB = 78  # and its local disk
TARGET_RAM_GB = 9.0  # what a full-track command may peak at, leaving room for the kernel and loader workers
IMAGE_SIZE = (640, 480)  # a typical CIRR image
CUT = {"train": 16, "val": 8, "test1": 4}  # triplets kept per CIRR split
TEST1_GALLERY = 52  # the submission's top 50 needs a gallery of more than 50 images
FASHION_CUT = {"train": 8, "val": 4, "test": 4}  # triplets kept per FashionIQ category and split
FASHION_GALLERY = 8  # images of each val/test gallery besides the kept triplets'
# The notebooks in full mode, with the parameters a CPU at the real size can run (set after each notebook's
# parameters cell, as papermill injects them): a batch the mini CIRR holds, a few timed steps and queries.
NOTEBOOKS = {
    "04_training": {"BATCH_SIZE": 4, "TIMED_STEPS": 4, "TIMING_ROUNDS": 1},
    "05_evaluation": {},
    "06_reproduce_the_paper": {},
    "07_reranking": {"KS": (1, 5, 10), "TIMED": 2, "BATCH": 4},
}


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
    toy = [t for t in (model_folder(TINY_BLIP2, ensure_toy()) / "vocab.txt").read_text().split() if t != BOS_TOKEN]
    words = [*SPECIAL_TOKENS, *(t for t in toy if t not in SPECIAL_TOKENS)]
    vocab = words + [f"[unused{i}]" for i in range(BLIP2_VOCABULARY - 1 - len(words))]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(str(out))
    tokenizer = load_tokenizer(out)  # with [DEC]
    assert len(tokenizer) == BLIP2_VOCABULARY, len(tokenizer)
    return tokenizer


def real_size_blip2(out: Path, seed: int = 0) -> Path:
    """A BLIP-2 retrieval model at ViT-g's sizes with random weights, saved as the hub's folder is laid out.

    Its ViT holds fp16 values, as BLIP-2's does (the authors keep it in fp16): a released file, which stores
    it in fp16, then holds the same ViT, and stage 1 and a re-ranker share it as they would for real."""
    sizes = blip2_vitg_config(BLIP2_VOCABULARY)
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(blip2_config(sizes))
    with torch.no_grad():
        for part in (model.vision_model.embeddings, model.vision_model.encoder):
            for p in part.parameters():
                p.copy_(p.half().float())
    model.save_pretrained(str(out))
    blip2_tokenizer(out)
    return out


def _cut(captions: list[dict], split: str) -> tuple[list[dict], set[str]]:
    kept = captions[: CUT[split]]
    names = {t["reference"] for t in kept} | {t["target_hard"] for t in kept if "target_hard" in t}
    if split != "train":  # the subset recalls rank a query's img_set; training never opens it
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
            names |= set(sorted(set(images) - names)[: max(0, TEST1_GALLERY - len(names))])
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


def mini_fashioniq(out: Path) -> Path:
    """The toy FashionIQ cut to a few triplets per category and split, its images at a real resolution, less the
    first dress val query's target image: a real copy always lacks some (full mode goes on without them)."""
    toy, root = ensure_toy() / FASHIONIQ_DIR, out / FASHIONIQ_DIR
    for folder in ("captions", "image_splits", "images"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for category in FASHIONIQ_CATEGORIES:
        for split, n in FASHION_CUT.items():
            kept = json.loads((toy / "captions" / f"cap.{category}.{split}.json").read_text())[:n]
            gallery = json.loads((toy / "image_splits" / f"split.{category}.{split}.json").read_text())
            names = {t[k] for t in kept for k in ("candidate", "target") if k in t}
            names |= set(gallery[:FASHION_GALLERY]) if split != "train" else set()
            (root / "captions" / f"cap.{category}.{split}.json").write_text(json.dumps(kept))
            (root / "image_splits" / f"split.{category}.{split}.json").write_text(
                json.dumps([n for n in gallery if n in names]))
            for name in names:
                with Image.open(toy / "images" / f"{name}.png") as image:
                    image.convert("RGB").resize(IMAGE_SIZE, Image.Resampling.BICUBIC).save(
                        root / "images" / f"{name}.png")
    first = json.loads((root / "captions" / "cap.dress.val.json").read_text())[0]
    (root / "images" / f"{first['target']}.png").unlink()
    return out


def build(out: Path) -> dict[str, Path]:
    """Every stand-in under `out` (kept between runs of the same version: building them takes minutes)."""
    paths = {"blip2": out / "blip2-itm-vit-g", "released": out / "checkpoints" / "sprc_cirr.pt",
             "released_fiq": out / "checkpoints" / "sprc_fiq.pt", "reranker": out / "reranker-best",
             "data": out / "data"}
    if (out / MARK).read_text() != STANDINS:
        for stale in (paths["blip2"], paths["released"].parent, paths["reranker"], paths["data"]):
            shutil.rmtree(stale, ignore_errors=True)
        (out / MARK).write_text(STANDINS)
    if not (paths["blip2"] / "config.json").is_file():
        print("building a BLIP-2 ViT-g with random weights ...", flush=True)
        real_size_blip2(paths["blip2"])
    if not paths["released"].is_file():
        print("writing the released-file stand-ins ...", flush=True)
        save_lavis_checkpoint(load_model(paths["blip2"]), paths["released"])
        os.link(paths["released"], paths["released_fiq"])  # the same stand-in weights under FashionIQ's name
        reranker = reranker_from_retrieval(load_model(paths["blip2"]))
        reranker.save_pretrained(paths["reranker"])  # what a re-ranker run's best/ holds
        load_tokenizer(paths["blip2"]).save_pretrained(paths["reranker"])
        del reranker
    if not (paths["data"] / CIRR_DIR).is_dir():
        print("cutting the mini CIRR and FashionIQ ...", flush=True)
        mini_cirr(paths["data"])
        mini_fashioniq(paths["data"])
    return paths


# Runs `argv` and prints the peak resident set of its process tree (the largest child's, in kB, as the kernel
# counts it for waited-for children), so each command is measured in a process of its own.
MEASURE = "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); " \
          "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"


def _size_gb(paths: Iterable[Path]) -> float:
    files = [f for p in paths if p.exists() for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1e9


def measure(name: str, argv: list[str], outputs: list[Path], log: Path, env: dict[str, str] | None = None,
            module: str = "sprc_lib") -> Row:
    """Run `python -m module argv` in its own process (with `env` added to the environment); its output goes to
    `log`."""
    start = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", module, *argv],
                              stdout=f, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        f.write(done.stderr)
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    row = Row(name, done.returncode, peak_kb / 1e6, time.perf_counter() - start, _size_gb(outputs))
    print(f"  {name}: exit {row.code}, peak {row.peak_gb:.1f} GB, {row.seconds:.0f} s", flush=True)
    return row


STEPS = 2  # per training command: the second step holds what the first allocates, and more


def commands(paths: dict[str, Path], work: Path) -> list[tuple[str, list[str], list[Path]]]:
    """(name, arguments, outputs) of each command rehearsed, in the order a user meets them."""
    data, blip2, released, reranker = (str(paths[k]) for k in ("data", "blip2", "released", "reranker"))
    # The cache full mode's notebooks use (SPRC_DATA/cache): they find the images the commands cached.
    cache, converted, run, rerank = paths["data"] / "cache", work / "converted", work / "run", work / "reranker"
    common = ["--dataset", "CIRR", "--data-path", data, "--preset", "blip2-vitg", "--num-workers", "0"]
    train = [*common, "--model-path", blip2, "--batch-size", "4", "--num-epochs", "1", "--stop-after-steps", str(STEPS)]
    cached = [*train, "--feature-cache", str(cache)]
    rerank_flags = ["--rerank-model", reranker, "--rerank-top-k", "8", "--tokenizer", blip2]
    submission = work / "submission"
    steps = f"{STEPS} step" + "s" * (STEPS > 1)
    return [
        ("check-data", ["check-data", "--dataset", "CIRR", "--data-path", data], []),
        ("check-data --dataset FashionIQ --skip-missing", ["check-data", "--dataset", "FashionIQ", "--data-path", data,
                                                           "--skip-missing"], []),
        ("convert", ["convert", "--lavis-checkpoint", released, "--out", str(converted), "--preset", "blip2-vitg",
                     "--tokenizer", blip2], [converted]),
        ("validate --model-path <converted>", ["validate", *common, "--model-path", str(converted),
                                               "--tokenizer", blip2], []),
        (f"train, {steps} from pixels", ["train", *train, "--output-dir", str(work / "run-pixels")],
         [work / "run-pixels"]),
        (f"train --micro-batch 2, {steps} from pixels", ["train", *train, "--micro-batch", "2", "--output-dir",
                                                       str(work / "run-micro")], [work / "run-micro"]),
        (f"train, {steps}, filling the feature cache", ["train", *cached, "--output-dir", str(run)],
         [run, cache]),
        (f"train --resume, {steps}", ["train", "--resume", str(run), "--stop-after-steps", str(STEPS)], [run]),
        (f"train-reranker, {steps}", ["train-reranker", *cached, "--stage1-model", str(converted), "--output-dir",
                                    str(rerank)], [rerank]),
        ("validate --rerank-model <re-ranker best/>", ["validate", *common, "--model-path", str(converted),
                                                          *rerank_flags, "--feature-cache", str(cache)], []),
        ("cirr-submission --rerank-model", ["cirr-submission", "--data-path", data, "--preset", "blip2-vitg",
                                            "--num-workers", "0", "--model-path", released, *rerank_flags,
                                            "--feature-cache", str(cache), "--output-dir", str(submission)],
         [submission]),
        ("plan", ["plan", "--preset", "blip2-vitg", "--batch-size", "128", "--cache"], []),
        ("bench --training-only", ["bench", "--preset", "blip2-vitg", "--batch-size", "2", "--repeats", "3",
                                   "--training-only"], []),
    ]


README = Path(__file__).resolve().parents[2] / "README.md"
NOTEBOOK_DIR = README.parent / "notebooks"
MARK_README = "rehearsal"  # the README's block that holds the last rehearsal's table
MARK = ".sprc-rehearsal"  # in every folder the rehearsal writes: it never clears a folder without it
STANDINS = "stand-ins 3"  # the mark's text: stand-ins built by another version are built again


def notebook_env(paths: dict[str, Path], work: Path) -> dict[str, str]:
    """Full mode on the stand-ins: the mini data, the BLIP-2 and released stand-ins, the converted model as both
    datasets' trained SPRC, the re-ranker folder; at most 8 steps per training run (notebook 04's demo run on
    the mini CIRR), two queries per second stage; random weights, so no claim about quality."""
    env = {"SPRC_MODE": "full", "SPRC_DATA": paths["data"], "SPRC_BLIP2": paths["blip2"],
           "SPRC_CIRR_CHECKPOINT": paths["released"], "SPRC_FIQ_CHECKPOINT": paths["released_fiq"],
           "SPRC_MAX_STEPS": 8, "SPRC_MAX_QUERIES": 2, "SPRC_STANDIN_WEIGHTS": 1}
    for short in ("CIRR", "FIQ"):
        env |= {f"SPRC_{short}_MODEL": work / "converted", f"SPRC_{short}_RERANKER": paths["reranker"]}
    return {k: str(v) for k, v in env.items()}


def with_parameters(notebook: Path, values: dict[str, object], out: Path) -> Path:
    """A copy of `notebook` under `out` with `values` set in a cell after its parameters cell."""
    book = nbformat.read(notebook, as_version=4)
    at = next(i for i, cell in enumerate(book.cells) if "parameters" in cell.metadata.get("tags", []))
    lines = [f"{name} = {value!r}" for name, value in values.items()]
    book.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(["# the rehearsal's parameters", *lines]),
                                                         metadata={"tags": ["injected-parameters"]}))
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(book, out / notebook.name)
    return out / notebook.name


def notebook_commands(paths: dict[str, Path], work: Path) -> list[tuple[str, list[str], list[Path]]]:
    """Notebooks 04-07 executed in full mode on the stand-ins (nbconvert), as a Colab user runs them."""
    out = work / "notebooks"
    return [(f"notebook {name[:2]} in full mode", ["--to", "notebook", "--execute", str(out / f"{name}.ipynb"),
                                                   "--output-dir", str(out / "executed"),
                                                   "--ExecutePreprocessor.timeout=-1"],
             [out / "executed" / f"{name}.ipynb"]) for name in NOTEBOOKS]


def rehearse(out: Path) -> tuple[list[Row], float]:
    """Each command's row, and the seconds spent building stand-ins (0 when an earlier rehearsal's are reused)."""
    if out.exists() and any(out.iterdir()) and not (out / MARK).exists():
        raise UserError(f"{out}: a folder the rehearsal did not make; give an empty or new folder "
                        "(make rehearse uses build/rehearsal)")
    out = out.resolve()  # the notebooks run in a folder of their own
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARK).exists():
        (out / MARK).touch()
    start = time.perf_counter()
    paths = build(out)
    built = time.perf_counter() - start
    work = out / "work"
    for fresh in (work, paths["data"] / "cache"):  # each rehearsal measures from nothing
        shutil.rmtree(fresh, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    rows = []
    for name, argv, outputs in commands(paths, work):
        rows.append(measure(name, argv, outputs, work / "logs" / f"{len(rows):02d}.log"))
    env = notebook_env(paths, work)
    for name, values in NOTEBOOKS.items():
        with_parameters(NOTEBOOK_DIR / f"{name}.ipynb", values, work / "notebooks")
    for name, argv, outputs in notebook_commands(paths, work):
        rows.append(measure(name, argv, outputs, work / "logs" / f"{len(rows):02d}.log", env, module="nbconvert"))
    return rows, built


def table(rows: list[Row]) -> str:
    return format_table(["command", "exit", "peak RSS (GB)", "wall (s)", "disk (GB)", "free Colab"], [
        [r.name, str(r.code), f"{r.peak_gb:.1f}", f"{r.seconds:.0f}", f"{r.disk_gb:.2f}", r.verdict()] for r in rows])


def bench_figures(log: str) -> tuple[float, float] | None:
    """(the cached step's speed-up over the step from pixels, the ViT's share: its forward on both images over
    the trainable step) from `bench`'s output; None if it did not print them."""
    speed = re.search(r"train step, cached ViT tokens\s+\S+\s+\S+\s+([\d.]+)", log)
    vit = re.search(r"ViT forward on both images = ([\d.]+)x", log)
    return (float(speed.group(1)), float(vit.group(1))) if speed and vit else None


def summary(rows: list[Row], out: Path, built: float) -> list[str]:
    """What the table does not show: the cache's gain at the real size, a checkpoint's size against the plan's,
    and the disk the rehearsal took."""
    lines = [f"Peak host memory of each command's process tree on this CPU, where the GPU's share (weights, "
             f"optimiser, activations) is host memory too; the verdict is against a free Colab session's "
             f"{COLAB_RAM_GB:g} GB, with {TARGET_RAM_GB:g} GB as the mark that leaves room for a kernel and "
             "loader workers."]
    logs = sorted((out / "work" / "logs").glob("*.log"))
    bench = next((bench_figures(f.read_text()) for f, r in zip(logs, rows, strict=False) if r.name.startswith("bench")),
                 None)
    if bench:
        lines.append(f"The feature cache at the real size (bench --training-only, batch 2, median of 3, this CPU): a "
                     f"training step from cached ViT tokens ran {bench[0]:.2f}x faster than from pixels; the ViT's "
                     f"forward on both images took {bench[1]:.1f}x the trainable step.")
    counted = next((re.search(r"a step from the feature cache computes ([\d.]+)x less", f.read_text())
                    for f, r in zip(logs, rows, strict=False) if r.name == "plan"), None)
    if bench and counted:
        lines.append(f"plan's FLOP count predicts that gain at {float(counted.group(1)):.2f}x: the trainable step's "
                     "many small operations run further below this CPU's peak than the ViT's large ones, so the "
                     "count overstates the gain here: read plan's T4 epoch times as optimistic.")
    written = out / "work" / "run" / "checkpoint.pt"
    if written.is_file():
        planned = run_disk(blip2_vitg_config(BLIP2_VOCABULARY)).checkpoint
        lines.append(f"checkpoint.pt: {written.stat().st_size / 1e9:.2f} GB written by train, {planned / 1e9:.2f} GB "
                     "as plan tells it beforehand.")
    lines.append(f"Disk: {_size_gb([out]):.1f} GB for the stand-ins and every output (a free Colab session has "
                 f"{COLAB_DISK_GB:g} GB).")
    commands_s = sum(r.seconds for r in rows)
    stand_ins = f"{built / 60:.0f} building the stand-ins" if built > 1 else "the stand-ins reused from an earlier run"
    lines.append(f"Time: {(built + commands_s) / 60:.0f} minutes in all on this CPU ({commands_s / 60:.0f} for the "
                 f"commands above, {stand_ins}).")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m sprc_lib.course.rehearse OUT", file=sys.stderr)
        return 2
    out = Path(argv[0])
    try:
        rows, built = rehearse(out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = "```text\n" + table(rows) + "\n```\n\n" + "\n\n".join(summary(rows, out, built))
    (out / "rehearsal.md").write_text(text + "\n")
    print(text)
    if README.is_file():  # in a checkout: the README shows the last rehearsal
        write_block(README, text, MARK_README)
        print(f"wrote the table into {README}")
    return 0 if all(r.code == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
