"""The toy track's reference numbers: what the shipped tiny weights score, generated into the docs, never typed.

Everyone who runs the tiny track evaluates the same shipped weights, and evaluation of fixed weights is the
same on every machine (small models score in float64: `evaluation.context`), so these numbers are what
`make course` prints and what the notebooks compute. A retraining (`make models RETRAIN=1`) gives other
weights on every CPU; how far it lands is measured over seeds and stated beside the reference.

    python -m sprc_lib.course.reference                    # reference.json and the doc blocks, from the shipped weights
    python -m sprc_lib.course.reference --retrain-seed 3 --workdir W   # one seed of the spread (minutes)
    python -m sprc_lib.course.reference --spread-from W    # retraining_spread.json from W's seeds, then the docs

`tests/test_reference.py` recomputes the numbers from the shipped weights and fails when a document says
something else; `tests/test_retraining.py` checks a fresh retraining against the band.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from pathlib import Path

from sprc_lib.course.rerank_tour import two_stages
from sprc_lib.course.shipped import SHIPPED, shipped
from sprc_lib.course.toy_track import ensure_toy, retrain_toy_track, tiny_stages
from sprc_lib.data.schema import DATASETS, FASHIONIQ_CATEGORIES
from sprc_lib.evaluation import chance
from sprc_lib.evaluation.context import EvalContext
from sprc_lib.evaluation.metrics import CIRR_RECALL_KS, CIRR_SUBSET_KS, FASHIONIQ_RECALL_KS, KEEP_BEST_KEY
from sprc_lib.evaluation.protocols import validation_stages
from sprc_lib.evaluation.rerank import Reranker, default_fuse, default_top_k
from sprc_lib.paths import checkout
from sprc_lib.tables import format_table
from sprc_lib.training.tiny_layout import model_folder, reranker_name

HERE = Path(__file__).parent
RESULTS = HERE / "reference.json"  # the shipped weights' metrics on toy val, per dataset and stage
SPREAD = HERE / "retraining_spread.json"  # the same metrics after retraining with several seeds
# The rows of the tables: every recall of each protocol, and the score each one keeps its best model by.
SUMMARY_KEYS = {"CIRR": (*(f"recall_at{k}" for k in CIRR_RECALL_KS), *(f"recall_subset_at{k}" for k in CIRR_SUBSET_KS),
                         KEEP_BEST_KEY["CIRR"]),
                "FashionIQ": (*(f"{c}_recall_at{k}" for c in FASHIONIQ_CATEGORIES for k in FASHIONIQ_RECALL_KS),
                              *(f"average_recall_at{k}" for k in FASHIONIQ_RECALL_KS), KEEP_BEST_KEY["FashionIQ"])}
MARK = "toy-results"  # a doc's generated block sits between <!-- toy-results --> and <!-- /toy-results -->
DOCS = ("README.md", "notebooks/TEACHING.md")


def results(root: Path, folders: dict[str, dict[str, Path]] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """{dataset: {stage: {metric: percent}}} on toy val: SPRC, SPRC² (the tiny fusion) and chance, and on CIRR the
    authors' pure re-ranking of the same top K (the docs quote it); from `folders` ({dataset: {"sprc",
    "reranker"}}) or the toy root's models."""
    out = {}
    for dataset in DATASETS:
        stage1, stage2 = tiny_stages(dataset, root, None if folders is None else folders[dataset])
        if dataset == "CIRR":
            out[dataset] = cirr_stages(stage1, stage2, root)
        else:
            sprc, sprc2 = validation_stages(stage1, dataset, root, stage2)
            out[dataset] = {"SPRC": sprc, "SPRC²": sprc2, "chance": chance(dataset, root)}
    return out


def cirr_stages(stage1: EvalContext, stage2: Reranker, root: Path) -> dict[str, dict[str, float]]:
    """CIRR val's SPRC, SPRC², chance and pure re-ranking, with one pass of the re-ranker: it scores each query's
    top K once, and the fused and the pure order both read those scores. (`make course` computes the first two
    through `validate`'s path; tests/test_course.py checks that both paths print the same table.)"""
    two = two_stages(stage1, stage2, root, stage2.top_k)
    return {"SPRC": two.metrics(two.stage1), "SPRC²": two.metrics(two.reranked(stage2.top_k, stage2.fuse)),
            "chance": chance("CIRR", root), "pure re-ranking": two.metrics(two.reranked(stage2.top_k, 0.0))}


def reference_results(root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """The metrics of the shipped weights, which must have been trained on the toy data under `root`."""
    for name in (*DATASETS, *map(reranker_name, DATASETS)):
        if shipped(name, root) is None:
            raise ValueError(f"{root}: the shipped {name} weights were trained on other toy data (make tiny-weights)")
    return results(root, {d: shipped_folders(d) for d in DATASETS})


def shipped_folders(dataset: str) -> dict[str, Path]:
    """The shipped tiny SPRC and re-ranker of `dataset`, as `tiny_stages` takes them."""
    return {"sprc": SHIPPED / dataset, "reranker": SHIPPED / reranker_name(dataset)}


def summary_table(found: dict[str, dict[str, dict[str, float]]]) -> str:
    """The table `make course` prints and the README quotes: both stages beside chance, one decimal."""
    rows = [[dataset, key, *(f"{found[dataset][stage][key]:.1f}" for stage in ("SPRC", "SPRC²", "chance"))]
            for dataset in DATASETS for key in SUMMARY_KEYS[dataset]]
    return format_table(["dataset", "metric", "tiny SPRC", "tiny SPRC²", "chance"], rows)


def band(spread: dict) -> dict[str, dict[str, dict[str, tuple[float, float]]]]:
    """{dataset: {stage: {metric: (lowest, highest)}}} over the seeds of a measured spread."""
    runs = spread["results"]
    return {d: {stage: {k: (min(r[d][stage][k] for r in runs), max(r[d][stage][k] for r in runs))
                        for k in SUMMARY_KEYS[d]} for stage in ("SPRC", "SPRC²")} for d in DATASETS}


def tolerance(low: float, high: float) -> tuple[float, float]:
    """What a retraining on another machine may score: the seeds' range widened by its own width on each side.

    A retraining elsewhere is one more draw; with 5 seeds the next draw falls outside their range a third of
    the time, so the range alone would fail a correct retraining. Its width on each side (at least 2 points)
    keeps the check about "did it learn as the recipe learns", not about the luck of the draw.
    """
    width = max(high - low, 2.0)
    return max(0.0, low - width), min(100.0, high + width)


def _compare(a: float, b: float, more: str, less: str) -> str:
    return more if a > b else less if a < b else "the same as"


def render(found: dict, spread: dict) -> str:
    """The generated block of the docs: the reference table, the retraining band, and the sentences on them."""
    cirr, fiq = found["CIRR"], found["FashionIQ"]
    ranges = band(spread)
    rows = [[d, k, *(f"{ranges[d][s][k][0]:.1f}-{ranges[d][s][k][1]:.1f}" for s in ("SPRC", "SPRC²"))]
            for d in DATASETS for k in SUMMARY_KEYS[d]]
    pure, sprc, two = cirr["pure re-ranking"], cirr["SPRC"], cirr["SPRC²"]
    f1, f2 = fiq["SPRC"]["average_recall_at10"], fiq["SPRC²"]["average_recall_at10"]
    lines = [
        "```", summary_table(found), "```", "",
        f"The tiny SPRC² re-orders the tiny SPRC's top {default_top_k('CIRR', 'tiny')} (CIRR) or top "
        f"{default_top_k('FashionIQ', 'tiny')} (FashionIQ) by {default_fuse('tiny')} x stage 1 + "
        f"{1 - default_fuse('tiny')} x the tiny re-ranker (`--rerank-fuse {default_fuse('tiny')}`, the tiny "
        "preset's default). The authors' pure re-ranking of the same top "
        f"{default_top_k('CIRR', 'tiny')} scores CIRR R@1 {pure['recall_at1']:.1f} and Rs@1 "
        f"{pure['recall_subset_at1']:.1f}, {_compare(pure['recall_at1'], sprc['recall_at1'], 'above', 'below')} "
        f"SPRC's R@1 ({sprc['recall_at1']:.1f}) and "
        f"{_compare(pure['recall_at1'], two['recall_at1'], 'above', 'below')} the fused SPRC²'s "
        f"({two['recall_at1']:.1f}; notebook 07, section 5). On toy FashionIQ, average R@10 is {f2:.1f} with "
        f"re-ranking against {f1:.1f} without; {_paired(spread, 'FashionIQ', 'average_recall_at10')}.",
        "",
        f"These are the shipped tiny weights' numbers, the same on every machine. A retraining (`make models "
        f"RETRAIN=1`) gives other weights on every CPU; over {len(spread['seeds'])} seeds "
        f"({', '.join(map(str, spread['seeds']))}) of the whole toy track, retrained here, it landed in these "
        "ranges (lowest-highest):",
        "", "```",
        format_table(["dataset", "metric", "retrained SPRC", "retrained SPRC²"], rows),
        "```", "",
        _outliers(found, ranges),
    ]
    return "\n".join(lines)


def _paired(spread: dict, dataset: str, key: str) -> str:
    """Whether re-ranking moves `key` the same way at every retrained seed: SPRC² minus SPRC, seed by seed."""
    gains = [run[dataset]["SPRC²"][key] - run[dataset]["SPRC"][key] for run in spread["results"]]
    span = f"{min(gains):+.1f} to {max(gains):+.1f} points"
    if min(gains) > 0 or max(gains) < 0:
        return (f"at each of the {len(gains)} retrained seeds re-ranking {'adds' if min(gains) > 0 else 'loses'} "
                f"too ({span})")
    return f"the retrained seeds disagree ({span}), so the toy data cannot tell whether re-ranking adds"


def _outliers(found: dict, ranges: dict) -> str:
    """A sentence on where the shipped weights, one more draw of the same recipe, fall outside the seeds' ranges."""
    out = [f"{d} {stage} {key} ({found[d][stage][key]:.1f}, {'above' if found[d][stage][key] > high else 'below'} "
           f"{low:.1f}-{high:.1f})"
           for d in DATASETS for stage in ("SPRC", "SPRC²") for key, (low, high) in ranges[d][stage].items()
           if not low <= found[d][stage][key] <= high]
    if not out:
        return "The shipped weights, one more draw of the same recipe, fall inside every one of these ranges."
    count = f"{len(out)} metric" if len(out) == 1 else f"{len(out)} metrics"
    return ("The shipped weights are one more draw of the same recipe (trained on a machine of this kind); "
            f"they fall outside these ranges on {count}: {'; '.join(out)}.")


def _block(mark: str) -> re.Pattern:
    return re.compile(rf"(<!-- {mark} -->\n)(.*?)(<!-- /{mark} -->)", re.S)


def doc_block(path: Path, mark: str = MARK) -> str | None:
    """The generated block of a doc (between `<!-- mark -->` and `<!-- /mark -->`), None if it has none."""
    match = _block(mark).search(path.read_text(encoding="utf-8"))
    return match.group(2).rstrip("\n") if match else None


def write_block(path: Path, text: str, mark: str = MARK) -> None:
    """Put `text` into a doc's generated block; a doc without one is an error (its markers were lost)."""
    old = path.read_text(encoding="utf-8")
    if not _block(mark).search(old):
        raise ValueError(f"{path}: no <!-- {mark} --> block to write into")
    path.write_text(_block(mark).sub(lambda m: m.group(1) + text + "\n" + m.group(3), old), encoding="utf-8")


def write_docs(checkout: Path, text: str) -> list[Path]:
    """Put `text` into every doc's generated block; a doc without one is an error (its markers were lost)."""
    written = []
    for name in DOCS:
        write_block(checkout / name, text)
        written.append(checkout / name)
    return written


def retrained(root: Path, seed: int, workdir: Path) -> dict:
    """Retrain the whole toy track with `seed` in a copy of the toy data under `workdir`; its metrics."""
    home = workdir / f"seed_{seed}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    for folder in ("cirr_dataset", "fashionIQ_dataset"):
        shutil.copytree(root / folder, home / folder, copy_function=os.link)
    for path in root.iterdir():
        if path.is_file():
            shutil.copy2(path, home / path.name)
    retrain_toy_track(home, seed)
    return results(home, {d: {"sprc": model_folder(d, home), "reranker": model_folder(reranker_name(d), home)}
                          for d in DATASETS})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sprc_lib.course.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", type=Path, default=None, help="toy data root (default: data/toy)")
    parser.add_argument("--retrain-seed", type=int, default=None, help="retrain the toy track with this seed")
    parser.add_argument("--workdir", type=Path, default=Path("build/spread"))
    parser.add_argument("--spread-from", type=Path, default=None, help="collect the seeds retrained under this folder")
    args = parser.parse_args(argv)
    root = ensure_toy(args.data_path)
    if args.retrain_seed is not None:
        found = retrained(root, args.retrain_seed, args.workdir)
        (args.workdir / f"seed_{args.retrain_seed}.json").write_text(json.dumps(found, indent=1))
        return 0
    if args.spread_from is not None:
        files = sorted(args.spread_from.glob("seed_*.json"), key=lambda p: int(p.stem.split("_")[1]))
        spread = {"seeds": [int(p.stem.split("_")[1]) for p in files],
                  "results": [json.loads(p.read_text()) for p in files]}
        SPREAD.write_text(json.dumps(spread, indent=1) + "\n")
    found = reference_results(root)
    RESULTS.write_text(json.dumps(found, indent=1) + "\n")
    source = checkout()
    if source is None:
        raise SystemExit("the docs live in a source checkout of the course: run this there")
    for path in write_docs(source, render(found, json.loads(SPREAD.read_text()))):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
