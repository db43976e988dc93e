"""`make course`: the toy track end to end, the notebooks run headless, and one summary."""

from __future__ import annotations

import time
from pathlib import Path

from sprc_lib.course.outputs import noise
from sprc_lib.course.reference import summary_table
from sprc_lib.course.toy_track import (
    LOCAL,
    ensure_models,
    ensure_toy,
    evaluate_tiny,
    retrain_toy_track,
    tiny_model,
)
from sprc_lib.data.check import data_tour
from sprc_lib.data.schema import DATASETS
from sprc_lib.errors import UserError
from sprc_lib.evaluation import EvalSettings, cirr_test_submission, make_eval_context
from sprc_lib.evaluation.rerank import default_top_k
from sprc_lib.paths import REPO_URL, checkout
from sprc_lib.tables import format_table
from sprc_lib.training.tiny_layout import model_folder


def execute_notebooks(out_dir: Path, timeout: int = 900) -> list[list[str]]:
    """Run every course notebook headless (tiny mode); write the executed copy and an HTML page of each.

    Returns one table row per notebook: name, seconds, status. A failing notebook is reported, and
    the others still run; so is one whose saved outputs show noise (`outputs.noise`).
    """
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in sorted((course_checkout() / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        status = "ok"
        try:
            ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
                notebook, {"metadata": {"path": str(path.parent)}}
            )
        except CellExecutionError as err:
            status = f"FAILED: {str(err).strip().splitlines()[-1][:80]}"
        if status == "ok" and (problems := noise(notebook)):
            status = f"NOISY: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        seconds = time.perf_counter() - start
        nbformat.write(notebook, out_dir / path.name)
        html, _ = HTMLExporter().from_notebook_node(notebook)
        (out_dir / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
        rows.append([path.stem, f"{seconds:.0f}", status])
        print(f"  {path.stem}: {status} ({seconds:.0f} s)", flush=True)
    return rows


def course_checkout() -> Path:
    """The checkout whose notebooks `make course` runs (an installed wheel ships the library only)."""
    root = checkout()
    if root is None:
        raise UserError(f"`course` runs the notebooks of a source checkout; clone the course (git clone {REPO_URL}) "
                        "and run `make course` there")
    return root


def run_course(data_path: str | Path | None = None, retrain: bool = False, models_only: bool = False) -> int:
    """Evaluate the toy track end to end, write a CIRR-style submission, run the notebooks, print a summary.

    The tiny models are the shipped ones (the course's reference) unless `retrain` trains them all here first.
    `models_only`: only make sure the toy data and the tiny models exist (`make models`).
    """
    root = ensure_toy(data_path)
    if retrain:
        start = time.perf_counter()
        retrain_toy_track(root)
        print(f"Retrained the tiny models in {time.perf_counter() - start:.0f} s: "
              + LOCAL.format(runs=root / "runs"))
    local = ensure_models(root)
    for name in local:
        print(f"{model_folder(name, root)}: " + LOCAL.format(runs=root / "runs"))
    if models_only:
        return 0
    data_tour(root)
    found = {}
    for dataset in DATASETS:
        sprc, sprc2, chance_levels = evaluate_tiny(dataset, root)
        found[dataset] = {"SPRC": sprc, "SPRC²": sprc2, "chance": chance_levels}
    ctx = make_eval_context(*tiny_model("CIRR", root), EvalSettings(device="cpu", feature_cache=str(root / "cache")))
    files = cirr_test_submission(ctx, root, course_checkout() / "build" / "submission", "toy_tiny")
    out = course_checkout() / "build" / "notebooks"
    print(f"\nRunning the notebooks headless (tiny mode) into {out} ...")
    notebooks = execute_notebooks(out)
    whose = "a LOCAL RETRAINING, not the reference" if local else "the shipped reference weights"
    print(f"\nToy track results (toy val, percent) beside chance, from {whose}; SPRC² re-orders SPRC's top "
          f"{default_top_k('CIRR', 'tiny')} (CIRR) / {default_top_k('FashionIQ', 'tiny')} (FashionIQ):")
    print(summary_table(found))
    print("\nCIRR-style test submission (toy test1), validated:\n" + "\n".join(f"  {p}" for p in files))
    if notebooks:
        print(f"\nNotebooks (executed copies and HTML in {out}):")
        print(format_table(["notebook", "seconds", "status"], notebooks))
    return 0 if all(row[2] == "ok" for row in notebooks) else 1
