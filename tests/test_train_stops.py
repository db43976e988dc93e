"""Every way a run can stop ends, after `--resume`, with the weights of a run that never stopped, bit for bit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sprc_lib.data.errors import DataError
from sprc_lib.errors import TrainingDiverged
from sprc_lib.paths import checkout
from sprc_lib.training.config import TrainConfig
from sprc_lib.training.runs import CHECKPOINT, TRAIN_CSV, VALIDATION_CSV, read_csv
from sprc_lib.training.trainer import TrainResult, resume_training, train


@pytest.fixture(scope="module")
def data(small_toy: Path) -> Path:
    """Toy CIRR with its first 192 training triplets (conftest): 6 steps of 32 an epoch, 2 epochs."""
    return small_toy


def config(data: Path, model: Path, out: Path) -> TrainConfig:
    return TrainConfig(dataset="CIRR", data_path=str(data), preset="tiny", model_path=str(model), output_dir=str(out),
                       num_epochs=2, batch_size=32, num_workers=0, seed=3)


@pytest.fixture(scope="module")
def whole_run(data: Path, tiny_blip2: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """The run never stopped (its folder holds the metric rows an interrupted run must end with)."""
    return train(config(data, tiny_blip2, tmp_path_factory.mktemp("whole") / "run"))


@pytest.fixture(scope="module")
def whole(whole_run) -> dict[str, torch.Tensor]:
    """The weights of the run never stopped."""
    return whole_run.model.state_dict()


def assert_same(weights: dict[str, torch.Tensor], whole: dict[str, torch.Tensor]) -> None:
    assert weights.keys() == whole.keys()
    for key, value in whole.items():
        assert torch.equal(weights[key], value), key


def signal_in_step(model: torch.nn.Module, at_step: int, signum: int) -> list[int]:
    """Send `signum` to this process from inside the forward pass of step `at_step`: the stop lands mid-step."""
    calls = []

    def hook(module, inputs, output) -> None:
        if module.training:  # twice a training step (the composed query, then the prompt-text pass)
            calls.append(1)
            if len(calls) == 2 * at_step - 1:
                os.kill(os.getpid(), signum)

    model.text_projection.register_forward_hook(hook)
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "termination signal"])
def test_a_signal_mid_step_saves_after_that_step_and_resumes_exactly(signum, data, tiny_blip2, whole, tmp_path,
                                                                     monkeypatch):
    import sprc_lib.training.build as build

    made = build.build_run

    def with_hook(*args, **kwargs):
        run = made(*args, **kwargs)
        signal_in_step(run.model, 8, signum)  # the second epoch's second step
        return run

    monkeypatch.setattr("sprc_lib.training.trainer.build_run", with_hook)
    stopped = train(config(data, tiny_blip2, tmp_path / "run"))
    monkeypatch.undo()
    assert not stopped.finished and stopped.stopped == signal.Signals(signum).name
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["position"]["global_step"] == 8
    assert_same(resume_training(tmp_path / "run").model.state_dict(), whole)


@pytest.mark.slow
def test_stop_after_steps_then_resume(data, tiny_blip2, whole, tmp_path):
    assert train(config(data, tiny_blip2, tmp_path / "run"), stop_after_steps=4).stopped == "stop_after_steps"
    assert_same(resume_training(tmp_path / "run").model.state_dict(), whole)


@pytest.mark.slow
def test_an_unreadable_image_saves_the_progress_and_names_the_file(data, tiny_blip2, whole, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy, copy_function=os.link)
    captions = json.loads((copy / "cirr_dataset" / "cirr" / "captions" / "cap.rc2.train.json").read_text())
    split = json.loads((copy / "cirr_dataset" / "cirr" / "image_splits" / "split.rc2.train.json").read_text())
    victim = copy / "cirr_dataset" / split[captions[100]["reference"]]
    original = victim.read_bytes()
    victim.unlink()
    victim.write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"(?s)cannot read image {victim}.*Progress is saved.*`resume`") as err:
        train(config(copy, tiny_blip2, tmp_path / "run"))
    position = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["position"]
    assert f"(epoch {position['epoch'] + 1}, step {position['step_in_epoch']})" in str(err.value)
    victim.write_bytes(original)
    assert_same(resume_training(tmp_path / "run").model.state_dict(), whole)


@pytest.mark.slow
def test_killed_outright_the_last_checkpoint_stands(data, tiny_blip2, whole, tmp_path):
    """kill -9 gives no chance to save: `--checkpoint-every` bounds what is lost, and nothing is corrupted."""
    flags = ["train", "--dataset", "CIRR", "--preset", "tiny", "--data-path", str(data), "--model-path",
             str(tiny_blip2), "--output-dir", str(tmp_path / "run"), "--num-epochs", "2", "--batch-size", "32",
             "--num-workers", "0", "--seed", "3", "--checkpoint-every", "1"]
    done = subprocess.Popen([sys.executable, "-m", "sprc_lib", *flags], cwd=checkout(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in done.stdout:  # the announcement comes just before the first step
        if "steps per epoch" in line:
            break
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / CHECKPOINT).is_file() and done.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    done.kill()
    done.wait(timeout=60)
    assert_same(resume_training(tmp_path / "run").model.state_dict(), whole)


TIMING = ("seconds", "triplets_per_s")  # the only columns that differ between two runs of the same steps


def metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """The run's metric rows, timings aside."""
    train_rows = [{k: v for k, v in row.items() if k not in TIMING} for row in read_csv(run_dir / TRAIN_CSV)]
    return train_rows, read_csv(run_dir / VALIDATION_CSV)


# Run the command line with a kill -9 sent from inside one phase of the run: the second epoch's second step,
# its validation, or the middle of writing its checkpoint (half a temporary file written).
KILLER = """
import os, signal, sys
import torch
from sprc_lib.training import trainer
phase, calls = sys.argv[1], []

def kill_on(nth, real):
    def call(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth:
            if phase == "saving":
                with open(args[1], "wb") as half:
                    half.write(b"PK half a checkpoint")
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call

if phase == "step":
    trainer.optimizer_step = kill_on(8, trainer.optimizer_step)
elif phase == "validation":
    trainer.validate = kill_on(2, trainer.validate)
else:
    torch.save = kill_on(2, torch.save)
from sprc_lib.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["step", "validation", "saving"])
def test_killed_in_any_phase_a_resume_writes_each_row_once(phase, data, tiny_blip2, whole_run, whole, tmp_path):
    """kill -9 lands between an epoch's rows and its checkpoint: the resume keeps the rows the checkpoint covers,
    so the CSVs and the weights end as an uninterrupted run's."""
    out = tmp_path / "run"
    flags = ["train", "--dataset", "CIRR", "--preset", "tiny", "--data-path", str(data), "--model-path",
             str(tiny_blip2), "--output-dir", str(out), "--num-epochs", "2", "--batch-size", "32",
             "--num-workers", "0", "--seed", "3"]
    killed = subprocess.run([sys.executable, "-c", KILLER, phase, *flags], cwd=checkout(), capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert_same(resume_training(out).model.state_dict(), whole)
    assert metrics(out) == metrics(whole_run.run_dir)


def test_a_second_ctrl_c_stops_at_once_and_leaves_the_last_checkpoint(data, tiny_blip2, tmp_path, monkeypatch):
    import sprc_lib.training.build as build

    made = build.build_run

    def twice(*args, **kwargs):
        run = made(*args, **kwargs)
        calls = signal_in_step(run.model, 8, signal.SIGINT)
        run.model.text_projection.register_forward_hook(  # the second Ctrl-C, in the same step
            lambda *_: os.kill(os.getpid(), signal.SIGINT) if len(calls) == 2 * 8 else None)
        return run

    monkeypatch.setattr("sprc_lib.training.trainer.build_run", twice)
    with pytest.raises(KeyboardInterrupt):
        train(config(data, tiny_blip2, tmp_path / "run"))
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["position"]["global_step"] == 6  # epoch end


def test_a_diverged_loss_is_named_and_not_saved(data, tiny_blip2, tmp_path):
    diverging = TrainConfig(**{**vars(config(data, tiny_blip2, tmp_path / "run")), "loss_rtc": 1e39})
    with pytest.raises(TrainingDiverged, match=r"the loss is (inf|nan) at epoch 1, step 1.*`learning_rate`"):
        train(diverging)
    assert not (tmp_path / "run" / CHECKPOINT).exists()
