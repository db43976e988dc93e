"""The course's main job (`make course`) and the shared toy-track artefacts the notebooks reuse.

Everything here is cached on disk under the toy root: the toy data, the pretrained tiny BLIP-2, and
one trained tiny SPRC per dataset. A notebook asks for what it needs and gets it, built if missing.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from sprc_lib.data import build_transform
from sprc_lib.data.toy import MARKER, generate_toy_data
from sprc_lib.env import pick_device
from sprc_lib.evaluate import chance, cirr_test_submission, validate
from sprc_lib.features import FeatureCache
from sprc_lib.model import SPRCModel
from sprc_lib.model.loading import load_model
from sprc_lib.model.tokenizer import load_tokenizer
from sprc_lib.paths import repo_root, toy_root
from sprc_lib.pretrain import TINY_BLIP2, pretrain_tiny_blip2
from sprc_lib.tables import format_table
from sprc_lib.train import TrainConfig, train

DATASETS = ("CIRR", "FashionIQ")
HEADLINE = {"CIRR": ("recall_at1", "recall_at10", "recall_at50", "recall_subset_at1"),
            "FashionIQ": ("average_recall_at10", "average_recall_at50")}  # fmt: skip


def ensure_toy(root: str | Path | None = None) -> Path:
    """The toy datasets and the pretrained tiny BLIP-2 under `root` (default data/toy), made if missing."""
    root = Path(root) if root else toy_root()
    if not (root / MARKER).is_file():
        generate_toy_data(root)
    if not (root / TINY_BLIP2 / "config.json").is_file():
        pretrain_tiny_blip2(root, root / TINY_BLIP2)
    return root


def tiny_run_dir(dataset: str, root: str | Path | None = None) -> Path:
    return (Path(root) if root else toy_root()) / "runs" / dataset


def tiny_model(dataset: str, root: str | Path | None = None, retrain: bool = False) -> tuple[SPRCModel, object]:
    """A tiny SPRC trained on toy `dataset` with the toy recipe (trained on first use, then reused)."""
    root = ensure_toy(root)
    run = tiny_run_dir(dataset, root)
    if retrain or not (run / "best" / "config.json").is_file():
        train(
            TrainConfig(
                dataset=dataset, data_path=str(root), preset="tiny", output_dir=str(run), num_workers=0,
                feature_cache=str(root / "cache"), save_training=True, save_best=True,
            ),
            resume=run if (run / "checkpoint.pt").is_file() and not retrain else None,
        )
    return load_model(run / "best").eval(), load_tokenizer(run / "best")


def evaluate_tiny(dataset: str, root: Path) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, chance) of the trained tiny model on toy val."""
    model, tokenizer = tiny_model(dataset, root)
    device = pick_device("cpu")
    transform = build_transform("targetpad", model.config.vision_config.image_size)
    cache = FeatureCache(root / "cache", model, transform)
    return validate(dataset, model, tokenizer, root, transform, device, None, cache), chance(dataset, root)


def execute_notebooks(out_dir: Path, timeout: int = 900) -> list[list[str]]:
    """Run every course notebook headless (tiny mode); write the executed copy and an HTML page of each.

    Returns one table row per notebook: name, seconds, status. A failing notebook is reported, and
    the others still run.
    """
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in sorted((repo_root() / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        status = "ok"
        try:
            ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
                notebook, {"metadata": {"path": str(path.parent)}}
            )
        except CellExecutionError as err:
            status = f"FAILED: {str(err).strip().splitlines()[-1][:80]}"
        seconds = time.perf_counter() - start
        nbformat.write(notebook, out_dir / path.name)
        html, _ = HTMLExporter().from_notebook_node(notebook)
        (out_dir / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
        rows.append([path.stem, f"{seconds:.0f}", status])
        print(f"  {path.stem}: {status} ({seconds:.0f} s)", flush=True)
    return rows


def run_course(data_path: str | Path | None = None, retrain: bool = False) -> int:
    """Train and evaluate the toy track end to end, write a CIRR-style submission, print a summary."""
    root = ensure_toy(data_path)
    rows = []
    for dataset in DATASETS:
        fresh = retrain or not (tiny_run_dir(dataset, root) / "best" / "config.json").is_file()
        start = time.perf_counter()
        tiny_model(dataset, root, retrain=retrain)
        took = f"trained in {time.perf_counter() - start:.0f} s" if fresh else "reused the model trained earlier"
        metrics, chance_levels = evaluate_tiny(dataset, root)
        print(f"{dataset}: {took} ({tiny_run_dir(dataset, root)})")
        rows += [[dataset, key, f"{metrics[key]:.1f}", f"{chance_levels[key]:.1f}"] for key in HEADLINE[dataset]]
    model, tokenizer = tiny_model("CIRR", root)
    transform = build_transform("targetpad", model.config.vision_config.image_size)
    files = cirr_test_submission(model, tokenizer, root, transform, repo_root() / "build" / "submission", "toy_tiny",
                                 torch.device("cpu"), cache=FeatureCache(root / "cache", model, transform))
    out = repo_root() / "build" / "notebooks"
    print(f"\nRunning the notebooks headless (tiny mode) into {out} ...")
    notebooks = execute_notebooks(out)
    print("\nToy track results (toy val, percent) beside chance:")
    print(format_table(["dataset", "metric", "tiny SPRC", "chance"], rows))
    print("\nCIRR-style test submission (toy test1), validated:\n" + "\n".join(f"  {p}" for p in files))
    if notebooks:
        print(f"\nNotebooks (executed copies and HTML in {out}):")
        print(format_table(["notebook", "seconds", "status"], notebooks))
    return 0 if all(row[2] == "ok" for row in notebooks) else 1
