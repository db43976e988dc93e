"""Several processes on CPU (gloo): global negatives, training under torchrun, resume across world sizes.

The multi-process runs are small (a toy CIRR cut to a few steps per epoch) because this machine has
two cores; each one still goes through PyTorch's own launcher and DistributedDataParallel.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from sprc_lib import distributed
from sprc_lib.cli import main as cli
from sprc_lib.data import CIRRDataset
from sprc_lib.model import LOSS_NAMES, tiny_config
from sprc_lib.model.loading import new_model
from sprc_lib.model.synthetic import random_triplets
from sprc_lib.paths import checkout
from sprc_lib.training.config import TrainConfig
from sprc_lib.training.recipes import TOY
from sprc_lib.training.runs import CHECKPOINT, read_csv
from sprc_lib.training.sampler import EpochBatchSampler
from sprc_lib.training.step import StepSettings, cached_backward
from sprc_lib.training.trainer import resume_training, train

VOCAB, B, L = 60, 4, 12  # B triplets per process
WEIGHTS = {"loss_itc": 1.0, "loss_rtc": 0.4, "loss_align": 0.4}


def triplets(count: int) -> dict[str, torch.Tensor]:
    """`count` random triplets, the same on every call (so every process slices the same batch)."""
    return random_triplets(tiny_config(VOCAB), count, seed=3, length=L)


def losses_and_grads(net: torch.nn.Module, model: torch.nn.Module, batch: dict, global_negatives: bool = False
                     ) -> tuple[dict, dict]:
    """The three losses and their weighted sum, and every parameter's gradient after backward on that sum."""
    model.zero_grad(set_to_none=True)
    losses = model.losses(net(batch), global_negatives)
    losses["loss"] = sum(WEIGHTS[k] * losses[k] for k in LOSS_NAMES)
    losses["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    """One process, its slice of the batch through DDP: global then local negatives, then the gradient cache
    (micro-batches of 2) with global negatives. One spawn for both tests: starting processes is most of the cost."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = new_model("tiny", vocab_size=VOCAB, seed=0).eval()  # dropout off: exact comparison
    ddp = DistributedDataParallel(model)
    mine = {k: v[rank * B : (rank + 1) * B] for k, v in triplets(world * B).items()}
    result = {}
    for name, flag in (("global", True), ("local", False)):
        losses, grads = losses_and_grads(ddp, model, mine, global_negatives=flag)
        mean = distributed.mean_over_ranks(torch.stack(list(losses.values())))
        result[name] = {"losses": dict(zip(losses, mean.tolist(), strict=True)), "grads": grads}

    model.zero_grad(set_to_none=True)
    recipe = replace(TOY["CIRR"], **{f"loss_{k}": WEIGHTS[f"loss_{k}"] for k in ("rtc", "align")})
    settings = StepSettings.of(recipe, global_negatives=True, micro_batch=2)
    loss, losses = cached_backward(ddp, mine, torch.amp.GradScaler("cpu", enabled=False), settings)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    mean = distributed.mean_over_ranks(torch.stack([*losses.values(), loss]).detach())
    result["micro"] = {"losses": dict(zip([*losses, "loss"], mean.tolist(), strict=True)), "grads": grads}
    torch.save(result, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


WORLD = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """What each of two processes computed (`_worker`)."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(WORLD, str(out / "rendezvous"), str(out)), nprocs=WORLD)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.slow
def test_global_negatives_give_one_process_loss_and_gradients_on_the_whole_batch(ranks):
    model = new_model("tiny", vocab_size=VOCAB, seed=0).eval()
    expected, expected_grads = losses_and_grads(model, model, triplets(WORLD * B))
    assert set(expected_grads) == {n for n, p in model.named_parameters() if p.requires_grad}

    for result in ranks:  # DDP leaves the same averaged gradients on every process
        got = result["global"]
        for name, value in expected.items():
            assert got["losses"][name] == pytest.approx(value.item(), abs=1e-5), name
        assert got["grads"].keys() == expected_grads.keys()
        for name, grad in expected_grads.items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=0, atol=1e-5, msg=name)

    # Local negatives (the reference's per-process behaviour) are a different loss: the check above can fail.
    local = ranks[0]["local"]
    for name in ("loss_itc", "loss_rtc"):
        assert abs(local["losses"][name] - expected[name].item()) > 1e-3, name
    assert local["losses"]["loss_align"] == pytest.approx(expected["loss_align"].item(), abs=1e-6)
    assert not torch.allclose(local["grads"]["temp"], expected_grads["temp"], atol=1e-5)


@pytest.mark.slow
def test_micro_batches_with_global_negatives_on_two_processes_give_the_whole_batch(ranks):
    model = new_model("tiny", vocab_size=VOCAB, seed=0).eval()
    expected, expected_grads = losses_and_grads(model, model, triplets(WORLD * B))
    for result in ranks:
        got = result["micro"]
        for name, value in expected.items():
            assert got["losses"][name] == pytest.approx(value.item(), abs=1e-6), name
        assert got["grads"].keys() == expected_grads.keys()
        for name, grad in expected_grads.items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=0, atol=1e-6, msg=name)


def test_the_sampler_goes_on_after_an_offset():
    whole = EpochBatchSampler(100, batch_size=8, seed=1)
    whole.set_epoch(4)
    order = [i for batch in whole for i in batch]  # 96 of the epoch's order: the last 4 dropped
    shards = [EpochBatchSampler(100, batch_size=8, seed=1, rank=r, world_size=2) for r in range(2)]
    for s in shards:
        s.set_epoch(4, start_batch=1, offset=24)  # 24 + 16 = 40 triplets consumed with another world size
    assert shards[0].stop == 4  # (100 - 24) // 16: the tail of 12 is dropped
    merged = [i for a, b in zip(*map(list, shards), strict=True) for i in a + b]
    assert merged == order[40:88]


def test_shards_cut_at_whole_batches(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    shares = []
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shares.append(distributed.shard(10, unit=3))
    assert shares == [range(0, 6), range(6, 10), range(10, 10)]


# ---------------------------------------------------------------- training under torchrun

# small_toy (conftest): 192 training triplets, an epoch of 6 steps of 32 in one process, 3 of 2 x 32 in two


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node N -m sprc_lib ARGS` (a free port each time); it must succeed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "sprc_lib", *args]
    done = subprocess.run(command, cwd=checkout(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def run_config(root: Path, model: Path, out: Path, **changes) -> TrainConfig:
    base = dict(dataset="CIRR", data_path=str(root), preset="tiny", model_path=str(model), output_dir=str(out),
                num_epochs=1, batch_size=32, validation_frequency=10, num_workers=0, seed=7)
    return TrainConfig(**{**base, **changes})


def run_flags(root: Path, model: Path, out: Path) -> list[str]:
    return ["train", "--dataset", "CIRR", "--data-path", str(root), "--preset", "tiny", "--model-path", str(model),
            "--output-dir", str(out), "--num-epochs", "1", "--batch-size", "32", "--validation-frequency", "10",
            "--num-workers", "0", "--seed", "7"]


@pytest.mark.slow
def test_two_processes_train_as_one_does_on_their_global_batch(small_toy, tiny_blip2, tmp_path):
    run = tmp_path / "ddp"
    done = torchrun(*run_flags(small_toy, tiny_blip2, run), "--global-negatives")
    assert done.stdout.count("global batch 64") == 1  # rank 0 alone speaks
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == sorted(
        [CHECKPOINT, "tokenizer", "train_metrics.csv", "training_hyperparameters.json", "validation_metrics.csv"]
    )
    saved = torch.load(run / CHECKPOINT, weights_only=True)
    assert saved["position"] == {"epoch": 1, "step_in_epoch": 0, "global_step": 3}
    assert saved["world"] == {"world_size": 2, "global_batch_size": 64, "samples_in_epoch": 0}
    assert len(saved["rng"]) == 2 and saved["config"]["global_negatives"]
    hyper = json.loads((run / "training_hyperparameters.json").read_text())
    assert (hyper["world_size"], hyper["global_batch_size"], hyper["steps_per_epoch"]) == (2, 64, 3)

    # One process with the same 64 triplets a step (stopped before its epoch-end validation) lands on the same
    # weights, up to a tenth of one step (lr 1e-3): AdamW divides by the gradients' RMS, so where a gradient is ~0
    # in theory (attention key biases) rounding noise grows into visible differences.
    one = train(run_config(small_toy, tiny_blip2, tmp_path / "one", batch_size=64), stop_after_steps=3)
    ours = one.model.state_dict()
    for name, value in saved["model"].items():
        torch.testing.assert_close(value, ours[name], rtol=0, atol=1e-4, msg=name)

    # The single-process `validate` loads the checkpoint and scores exactly what the sharded validation did.
    out = tmp_path / "metrics.json"
    assert cli(["validate", "--dataset", "CIRR", "--data-path", str(small_toy), "--preset", "tiny", "--model-path",
                str(run / CHECKPOINT), "--num-workers", "0", "--output", str(out)]) == 0
    (row,) = read_csv(run / "validation_metrics.csv")
    assert row.pop("epoch") == 1  # counted from 1
    assert row == json.loads(out.read_text())


@pytest.mark.slow
def test_a_run_resumes_with_another_number_of_processes(small_toy, tiny_blip2, tmp_path):
    run = tmp_path / "run"
    train(run_config(small_toy, tiny_blip2, run), stop_after_steps=3)  # one process: 3 x 32 = 96 triplets
    saved = torch.load(run / CHECKPOINT, weights_only=True)
    assert saved["world"]["samples_in_epoch"] == 96 and saved["scheduler"]["total_steps"] == 6

    # Two processes: global batch 64 does not divide 96, so their batches start 32 triplets past a boundary.
    # With a feature cache, which rank 0 fills (training and validation images) before the other opens it.
    cache = tmp_path / "cache"
    torchrun("train", "--resume", str(run), "--data-path", str(small_toy), "--num-workers", "0",
             "--stop-after-steps", "1", "--feature-cache", str(cache))
    gallery = CIRRDataset(small_toy, "val", "classic")
    (key,) = cache.iterdir()  # both processes keyed the cache alike: one folder, holding the validation gallery
    cached = {path for index in key.glob("chunk_*.json") for path, *_ in json.loads(index.read_text())}
    assert {str(gallery.image_path(n).resolve()) for n in gallery.image_names} <= cached
    saved = torch.load(run / CHECKPOINT, weights_only=True)
    assert saved["world"] == {"world_size": 2, "global_batch_size": 64, "samples_in_epoch": 160}
    assert saved["position"] == {"epoch": 0, "step_in_epoch": 2, "global_step": 4}
    # OneCycle rebuilt for 3 steps an epoch, fast-forwarded to whole batches consumed (96 // 64 = 1), stepped once.
    assert (saved["scheduler"]["total_steps"], saved["scheduler"]["last_epoch"]) == (3, 2)

    # One process again: 160 = 5 x 32, one step left in the epoch, then validation and the final checkpoint.
    done = resume_training(run)
    assert done.finished and [r["epoch"] for r in done.train_history] == [1]
    assert math.isfinite(done.train_history[0]["loss"]) and len(done.val_history) == 1
    saved = torch.load(run / CHECKPOINT, weights_only=True)
    assert saved["position"] == {"epoch": 1, "step_in_epoch": 0, "global_step": 5}
    assert (saved["scheduler"]["total_steps"], saved["scheduler"]["last_epoch"]) == (6, 6)
    assert len(saved["rng"]) == 1


@pytest.mark.slow
def test_two_processes_train_a_reranker_and_validate_it_as_one_process_would(small_toy, tiny_blip2, tmp_path):
    """train-reranker under torchrun: rank 0 alone writes and speaks, its sharded two-stage validation gathers the
    same metrics the single-process `validate --rerank-model` computes from the checkpoint."""
    from sprc_lib.model.loading import load_model
    from sprc_lib.model.rerank import RerankerModel

    run = tmp_path / "reranker"
    flags = ["train-reranker", "--dataset", "CIRR", "--data-path", str(small_toy), "--preset", "tiny", "--model-path",
             str(tiny_blip2), "--stage1-model", str(tiny_blip2), "--output-dir", str(run), "--num-epochs", "1",
             "--batch-size", "32", "--num-workers", "0", "--rerank-top-k", "2", "--rerank-fuse", "0"]
    done = torchrun(*flags)
    assert done.stdout.count("re-ranker: 2 process(es) x batch 32") == 1
    saved = torch.load(run / CHECKPOINT, weights_only=True)
    assert saved["world"]["world_size"] == 2 and saved["position"]["global_step"] == 3
    assert isinstance(load_model(run / CHECKPOINT), RerankerModel)
    out = tmp_path / "both.json"
    assert cli(["validate", "--dataset", "CIRR", "--data-path", str(small_toy), "--preset", "tiny", "--model-path",
                str(tiny_blip2), "--rerank-model", str(run / CHECKPOINT), "--rerank-top-k", "2", "--rerank-fuse", "0",
                "--num-workers", "0", "--output", str(out)]) == 0
    (row,) = read_csv(run / "validation_metrics.csv")
    assert row.pop("epoch") == 1  # counted from 1
    assert row == json.loads(out.read_text())["SPRC²"]
