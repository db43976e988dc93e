"""The homework's ablations, measured: the toy CIRR SPRC trained with the recipe and with one thing changed, over
several seeds, so that the teacher knows the range a student's result should fall in.

    python -m sprc_lib.course.ablations [--seeds 0 1 2 3 4] [--jobs 2] [--workdir build/ablations]
    (make ablations: one toy training per arm and seed, a few CPU minutes each; a stopped run starts again from its
    seed, and a finished one is kept under a digest of its starting weights and its changes)

Every run starts from the shipped tiny BLIP-2, saved as an SPRC model under the run's seed (so each arm starts
from the same prompt tokens for a seed), and trains with the toy recipe (`TOY["CIRR"]`) on the toy CIRR; what
is reported is the last epoch's validation, with no selection. The results go to `ablations.json` beside this
module and, as ranges over the seeds, into notebooks/TEACHING.md (a test checks that the block is the file's).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from sprc_lib.course.curves import hide_progress
from sprc_lib.course.lab_plan import TEACHING
from sprc_lib.course.reference import write_block
from sprc_lib.course.toy_track import ensure_toy
from sprc_lib.files import write_atomic
from sprc_lib.model.loading import load_model
from sprc_lib.model.tokenizer import load_tokenizer
from sprc_lib.tables import format_table
from sprc_lib.training.config import TrainConfig
from sprc_lib.training.recipes import TOY
from sprc_lib.training.tiny_layout import TINY_BLIP2
from sprc_lib.training.trainer import train

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "ablations.json"
MARK = "ablations"
RECIPE = "the recipe"
# Each arm: the TrainConfig fields it changes, and how many of the query tokens it keeps (None: all).
ARMS: dict[str, tuple[dict[str, float | str], int | None]] = {
    RECIPE: ({}, None),
    "alignment weight 0": ({"loss_align": 0.0}, None),
    "4 prompt tokens": ({}, 4),
    "per-sample auxiliary prompts": ({"auxiliary_prompt": "per-sample"}, None),  # the paper's Eq. 2-3 (issue #17)
}
METRICS = ("recall_at1", "recall_at5", "recall_at10", "recall_at50", "recall_subset_at1", "mean_r5_rs1")
KEY = "mean_r5_rs1"  # CIRR's headline: the mean of R@5 and Rs@1


def fewer_prompt_tokens(model: nn.Module, n: int) -> nn.Module:
    """Keep the first `n` of the Q-Former's query tokens, and as many prompt tokens: SPRC's prompt is as long as
    the query tokens the fusion pass turns into it."""
    with torch.no_grad():
        model.query_tokens = nn.Parameter(model.query_tokens[:, :n].clone())
        model.prompt_tokens = nn.Parameter(model.prompt_tokens[:, :n].clone())
    model.config.num_query_tokens = n
    return model


def start_folder(root: Path, out: Path, seed: int, keep: int | None) -> Path:
    """The tiny BLIP-2 as an SPRC model (its prompt tokens drawn under `seed`), with `keep` query tokens."""
    torch.manual_seed(seed)
    model = load_model(root / TINY_BLIP2)
    if keep is not None:
        fewer_prompt_tokens(model, keep)
    model.save_pretrained(str(out))
    load_tokenizer(root / TINY_BLIP2).save_pretrained(str(out))
    return out


def arm_key(root: Path, arm: str) -> str:
    """The arm's folder name: its name, and a digest of what it trains from (the tiny BLIP-2's weights, the arm's
    changes), so that a result measured from other weights or another definition is never taken for this one."""
    digest = hashlib.sha256((root / TINY_BLIP2 / "model.safetensors").read_bytes())
    digest.update(json.dumps(ARMS[arm], sort_keys=True).encode())
    return f"{arm.replace(' ', '_')}_{digest.hexdigest()[:10]}"


def run(arm: str, seed: int, workdir: Path) -> dict[str, float]:
    """One arm at one seed: its last epoch's CIRR validation (written to `workdir/<arm>/<seed>.json` too)."""
    torch.set_num_threads(1)  # the runs go side by side, one core each
    root = ensure_toy()
    changes, keep = ARMS[arm]
    done = workdir / arm_key(root, arm) / f"{seed}.json"
    if done.is_file():
        return json.loads(done.read_text())
    start = start_folder(root, done.parent / f"start_{seed}", seed, keep)
    with hide_progress(stdout=True):  # runs side by side would interleave their bars; the pool shows one
        result = train(TrainConfig(dataset="CIRR", data_path=str(root), preset="tiny", model_path=str(start),
                                   seed=seed, output_dir=str(done.parent / f"run_{seed}"), num_workers=0,
                                   feature_cache=str(root / "cache"), **changes), overwrite=True)
    metrics = {k: result.val_history[-1][k] for k in METRICS}
    write_atomic(done, json.dumps(metrics))  # a run killed while writing leaves no half file
    return metrics


def measure(seeds: list[int], jobs: int, workdir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{arm: {seed: metrics}} for every arm and seed, `jobs` trainings at a time."""
    tasks = [(arm, seed) for arm in ARMS for seed in seeds]
    results: dict[str, dict[str, dict[str, float]]] = {arm: {} for arm in ARMS}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run, *task, workdir): task for task in tasks}
        with tqdm(total=len(tasks), desc="toy trainings", unit="run") as bar:
            for future in as_completed(futures):
                arm, seed = futures[future]
                results[arm][str(seed)] = future.result()
                bar.write(f"{arm}, seed {seed}: {KEY} {results[arm][str(seed)][KEY]:.1f}")
                bar.update()
    return {arm: dict(sorted(by_seed.items(), key=lambda item: int(item[0]))) for arm, by_seed in results.items()}


def block(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """The ranges over the seeds, per arm and metric, and each arm's change in the key metric against the recipe
    at the same seed."""
    seeds = sorted(results[RECIPE], key=int)
    recipe = TOY["CIRR"]
    rows = []
    for arm, by_seed in results.items():
        cells = [f"{min(m[k] for m in by_seed.values()):.1f}-{max(m[k] for m in by_seed.values()):.1f}"
                 for k in METRICS]
        change = [by_seed[s][KEY] - results[RECIPE][s][KEY] for s in seeds]
        rows.append([arm, *cells, "-" if arm == RECIPE else f"{min(change):+.1f} to {max(change):+.1f}"])
    return (f"Toy CIRR val after the toy recipe's {recipe.num_epochs} epochs (the last epoch, no selection, every run "
            "from the shipped tiny BLIP-2: the retraining band above pretrains its own tiny BLIP-2 per seed and keeps "
            "each run's best epoch, so its ranges differ), lowest-highest over "
            f"seeds {', '.join(seeds)}; the recipe's alignment weight is {recipe.loss_align:g}. {KEY} is the mean of "
            f"R@5 and Rs@1, CIRR's headline. The last column is each arm's {KEY} minus the recipe's at the same seed: "
            "where its range holds zero, the seeds cannot tell the change from no change. Measured by "
            "`make ablations`.\n\n"
            "```text\n" + format_table(["arm", *METRICS, f"{KEY} vs recipe"], rows) + "\n```")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sprc_lib.course.ablations", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--workdir", type=Path, default=Path("build/ablations"))
    args = parser.parse_args(argv)
    results = measure(args.seeds, args.jobs, args.workdir)
    write_atomic(RESULTS, json.dumps(results, indent=1) + "\n")
    text = block(results)
    write_block(TEACHING, text, MARK)
    print(text)
    print(f"wrote {RESULTS} and the block in {TEACHING}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
