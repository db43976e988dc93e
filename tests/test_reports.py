"""`--report-to tensorboard`: the CSVs' scalars at the optimiser step, one curve across resumes, a clear stop."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sprc_lib.cli import main
from sprc_lib.errors import UserError
from sprc_lib.model import LOSS_NAMES
from sprc_lib.training import reports
from sprc_lib.training.config import TrainConfig
from sprc_lib.training.runs import CHECKPOINT, TENSORBOARD, TRAIN_CSV, VALIDATION_CSV, read_csv
from sprc_lib.training.trainer import resume_training, train


def config(data: Path, model: Path, out: Path) -> TrainConfig:
    """Toy CIRR's first 192 triplets (conftest's `small_toy`): 6 steps of 32 an epoch, 2 epochs, 12 steps."""
    return TrainConfig(dataset="CIRR", data_path=str(data), preset="tiny", model_path=str(model), output_dir=str(out),
                       num_epochs=2, batch_size=32, num_workers=0, seed=3, report_to="tensorboard")


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of the run's event files, as TensorBoard reads them (purged steps left out)."""
    events = EventAccumulator(str(run_dir / TENSORBOARD), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_the_curves_are_the_csvs_and_a_resume_continues_them_without_duplicates(small_toy, tiny_blip2, tmp_path):
    run, steps = tmp_path / "run", {}

    def record(kind: str, info: dict) -> None:  # what the trainer's callback gets, step by step
        if kind == "step":
            steps[info["step"]] = info

    train(config(small_toy, tiny_blip2, run), callback=record, stop_after_steps=7)
    at_step_7 = (run / CHECKPOINT).read_bytes()
    resume_training(run, callback=record, stop_after_steps=1)  # logs step 8 and checkpoints it
    (run / CHECKPOINT).write_bytes(at_step_7)  # as if it had died after logging step 8, before its checkpoint
    assert resume_training(run, callback=record).finished  # steps 8 to 12 again from step 7

    curves = scalars(run)
    for name in ("loss", *LOSS_NAMES, "lr"):
        curve = curves[f"step/{name}"]
        assert [s for s, _ in curve] == list(range(1, 13)), name  # each step once, in order
        expected = [steps[s]["lr"] if name == "lr" else steps[s]["losses"][name] for s, _ in curve]
        assert [v for _, v in curve] == pytest.approx(expected, rel=1e-6), name
    for prefix, csv in (("epoch", TRAIN_CSV), ("validation", VALIDATION_CSV)):
        rows = read_csv(run / csv)
        assert len(rows) == 2
        for column in rows[0].keys() - {"epoch"}:
            assert curves[f"{prefix}/{column}"] == [(6, pytest.approx(rows[0][column], rel=1e-6)),
                                                    (12, pytest.approx(rows[1][column], rel=1e-6))], column


def test_without_tensorboard_training_stops_before_it_starts_and_says_how_to_get_it(
        small_toy, tiny_blip2, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `from torch.utils.tensorboard import` fails
    with pytest.raises(UserError, match="pip install tensorboard"):
        train(config(small_toy, tiny_blip2, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    flags = ["train", "--dataset", "CIRR", "--data-path", str(small_toy), "--model-path", str(tiny_blip2),
             "--output-dir", str(tmp_path / "run"), "--report-to", "tensorboard"]
    assert main(flags) == 2
    message = capsys.readouterr().err
    assert "pip install tensorboard" in message and "Traceback" not in message
    assert not (tmp_path / "run").exists()


def test_report_to_none_writes_nothing(tmp_path):
    with reports.reporting("none", tmp_path, 0) as report:
        assert report is None
    assert not any(tmp_path.iterdir())

