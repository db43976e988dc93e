"""SPRC² from the command line: train-reranker runs, stops and resumes like train; validate and cirr-submission
re-rank with --rerank-model and print both stages; wrong combinations get one message and exit code 2."""

from __future__ import annotations

import json

import pytest
import torch

from sprc_lib.cli import main
from sprc_lib.model.loading import load_model
from sprc_lib.model.rerank import RerankerModel


def fails(argv, capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as err:
        code = err.code
    assert code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def reranker_run(small_toy, tiny_blip2, tmp_path_factory) -> dict:
    """A re-ranker trained 2 steps from the tiny BLIP-2, stopped, then resumed to 4 (no validation on the way)."""
    run = tmp_path_factory.mktemp("reranker") / "run"
    common = ["--dataset", "CIRR", "--data-path", str(small_toy), "--preset", "tiny", "--model-path", str(tiny_blip2),
              "--stage1-model", str(tiny_blip2), "--num-workers", "0", "--batch-size", "16", "--num-epochs", "1",
              "--output-dir", str(run)]
    assert main(["train-reranker", *common, "--stop-after-steps", "2"]) == 0
    stopped = load_model(run / "checkpoint.pt")
    assert main(["train-reranker", "--resume", str(run), "--stop-after-steps", "2"]) == 0
    return {"run": run, "data": small_toy, "stage1": tiny_blip2, "stopped": stopped}


def test_a_reranker_run_stops_and_resumes_in_its_folder(reranker_run, capsys):
    run = reranker_run["run"]
    assert f"resume it with `python -m sprc_lib train-reranker --resume {run}`" in fails(
        ["train", "--resume", str(run)], capsys)  # each command resumes its own kind of run
    resumed = load_model(run / "checkpoint.pt")
    assert isinstance(reranker_run["stopped"], RerankerModel) and isinstance(resumed, RerankerModel)
    # The checkpoint leaves out what the run rebuilds from its base model: the ViT and the frozen miner.
    saved = torch.load(run / "checkpoint.pt", weights_only=True, mmap=True)
    left_out = set(saved["frozen_from"]["names"])
    assert left_out == {n for n, p in resumed.named_parameters() if not p.requires_grad}
    assert not left_out & set(saved["model"]) and {"miner", "vision_model"} <= {n.split(".")[0] for n in left_out}
    rows = (run / "training_hyperparameters.json").read_text()
    assert json.loads(rows)["config"]["reranker"] is True
    moved = [k for k, v in resumed.state_dict().items() if not (v == reranker_run["stopped"].state_dict()[k]).all()]
    assert "itm_head.weight" in moved and not any(k.startswith("miner.") for k in moved)


def test_validate_prints_both_stages(reranker_run, tmp_path, capsys):
    out_json = tmp_path / "m.json"
    argv = ["validate", "--dataset", "CIRR", "--data-path", str(reranker_run["data"]), "--preset", "tiny",
            "--model-path", str(reranker_run["stage1"]), "--rerank-model", str(reranker_run["run"] / "checkpoint.pt"),
            "--rerank-top-k", "2", "--output", str(out_json)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "SPRC²" in out and "re-ranked by" in out and "top 2 of each query" in out
    both = json.loads(out_json.read_text())
    assert set(both) == {"SPRC", "SPRC²"}
    # Re-ordering each query's top 2 cannot move anything into or out of the top 2, nor below it.
    for key in ("recall_at5", "recall_at10", "recall_at50"):
        assert both["SPRC²"][key] == pytest.approx(both["SPRC"][key]), key


def test_cirr_submission_with_a_reranker(reranker_run, tmp_path, capsys):
    argv = ["cirr-submission", "--data-path", str(reranker_run["data"]), "--preset", "tiny", "--model-path",
            str(reranker_run["stage1"]), "--rerank-model", str(reranker_run["run"] / "checkpoint.pt"),
            "--rerank-top-k", "2", "--output-dir", str(tmp_path / "sub"), "--submission-name", "two"]
    assert main(argv) == 0
    assert (tmp_path / "sub" / "recall_submission_two.json").is_file()


@pytest.mark.parametrize(("extra", "says"), [
    (["--rerank-top-k", "5"], "--rerank-top-k applies to a re-ranker: pass --rerank-model too"),
    (["--rerank-fuse", "0.5"], "--rerank-fuse applies to a re-ranker"),
    (["--rerank-model", "{stage1}"], "this is an SPRC (stage-1) model; pass it as --model-path"),
    (["--rerank-model", "{run}/checkpoint.pt", "--rerank-fuse", "2"], "--rerank-fuse 2.0: give a weight between 0"),
    (["--rerank-model", "{run}/checkpoint.pt", "--rerank-top-k", "0"], "--rerank-top-k 0: must be at least 1"),
])
def test_wrong_rerank_flags_say_what_to_do(reranker_run, extra, says, capsys):
    extra = [e.format(stage1=reranker_run["stage1"], run=reranker_run["run"]) for e in extra]
    argv = ["validate", "--dataset", "CIRR", "--data-path", str(reranker_run["data"]), "--preset", "tiny",
            "--model-path", str(reranker_run["stage1"]), *extra]
    assert says in fails(argv, capsys)


def test_a_reranker_is_not_a_stage_one_model(reranker_run, capsys):
    argv = ["validate", "--dataset", "CIRR", "--data-path", str(reranker_run["data"]), "--preset", "tiny",
            "--model-path", str(reranker_run["run"] / "checkpoint.pt")]
    assert "this is an SPRC² re-ranker; pass it as --rerank-model" in fails(argv, capsys)


@pytest.mark.parametrize(("flags", "says"), [
    (["--micro-batch", "4"], "unrecognized arguments: --micro-batch"),
    (["--batch-size", "1"], "--batch-size 1: the re-ranker draws its hard negatives from the batch"),
    (["--stage1-model", "nowhere/best"], "--stage1-model nowhere/best"),
])
def test_train_reranker_refuses_what_it_cannot_do(small_toy, tiny_blip2, flags, says, capsys, tmp_path):
    argv = ["train-reranker", "--dataset", "CIRR", "--data-path", str(small_toy), "--preset", "tiny",
            "--model-path", str(tiny_blip2), "--output-dir", str(tmp_path / "r"), "--num-workers", "0", *flags]
    assert says in fails(argv, capsys)
