"""Live training curves and history plots: what the Trainer's callback records, when it redraws, what it draws."""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from sprc_lib.course import curves, style
from sprc_lib.course.curves import LiveCurves, StepTimer, learning_rates, plot_history, plot_loss_terms, plot_schedules
from sprc_lib.course.style import CourseFigure, smooth
from sprc_lib.model import LOSS_NAMES
from sprc_lib.training.config import TrainConfig
from sprc_lib.training.recipes import PAPER
from sprc_lib.training.runs import write_csv
from sprc_lib.training.trainer import train


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeHandle:
    def __init__(self, log: list) -> None:
        self.log = log

    def update(self, obj) -> None:
        self.log.append(("update", obj))


@pytest.fixture
def shown(monkeypatch):
    """Record what would reach the notebook instead of displaying it."""
    log: list = []

    def display(obj, display_id=False):
        log.append(("display", obj))
        return FakeHandle(log)

    monkeypatch.setattr("IPython.display.display", display)
    return log


def step(i: int, epoch: int = 0, loss: float = 1.0) -> tuple[str, dict]:
    losses = {"loss_itc": loss, "loss_rtc": 2 * loss, "loss_align": loss / 10, "loss": 1.5 * loss}
    return "step", {"epoch": epoch, "step": i, "losses": losses, "lr": 1e-3 / i}


def validation(epoch: int, step_: int, r10: float) -> tuple[str, dict]:
    metrics = {"recall_at1": r10 / 4, "recall_at10": r10, "recall_at50": 90.0, "recall_subset_at1": 40.0,
               "arithmetic_mean": 50.0}
    return "validation", {"epoch": epoch, "step": step_, "metrics": metrics}


def test_records_steps_and_validations_and_draws_them():
    live = LiveCurves(show=False, chance={"recall_at10": 2.8})
    for i in range(1, 6):
        live(*step(i, loss=1.0 / i))
    live("epoch", {"epoch": 0, "step": 5, "metrics": {}})
    live(*validation(0, 5, 30.0))
    live(*step(6, epoch=1, loss=0.1))
    live(*validation(1, 6, 45.0))

    assert live.loss_series("loss_itc") == ([1, 2, 3, 4, 5, 6], [1.0, 0.5, 1 / 3, 0.25, 0.2, 0.1])
    assert live.recall_series("recall_at10") == ([1, 2], [30.0, 45.0])
    fig = live.figure()
    loss_ax, lr_ax, recall_ax = fig.axes
    assert {t.get_text() for t in loss_ax.get_legend().get_texts()} == {"loss", *LOSS_NAMES}
    assert list(lr_ax.lines[0].get_ydata()) == [1e-3 / i for i in range(1, 7)]
    r10 = next(line for line in recall_ax.lines if line.get_label() == "recall_at10")
    assert list(r10.get_ydata()) == [30.0, 45.0]
    assert any(list(line.get_ydata()) == [2.8, 2.8] for line in recall_ax.lines)  # the chance line


def test_redraws_are_throttled_but_epoch_events_always_redraw(shown):
    clock = FakeClock()
    live = LiveCurves(show=True, every_s=2.0, clock=clock)
    live(*step(1))  # first draw: a new display
    clock.now = 1.0
    live(*step(2))  # too soon
    clock.now = 2.5
    live(*step(3))  # due
    clock.now = 2.6
    live(*validation(0, 3, 20.0))  # forced
    live.show_here()  # e.g. a resumed run in a new cell
    clock.now = 2.7
    live(*step(4))
    assert [kind for kind, _ in shown] == ["display", "update", "update", "display"]
    assert live.redraws == 4
    assert shown[-1][1].data[:8] == b"\x89PNG\r\n\x1a\n"


def test_slow_redraws_are_spaced_to_a_tenth_of_the_time(shown, monkeypatch):
    clock = FakeClock()
    real_png = style.figure_png

    def slow_png(fig):  # drawing takes one second on this "busy machine"
        clock.now += 1.0
        return real_png(fig)

    monkeypatch.setattr(curves, "figure_png", slow_png)
    live = LiveCurves(show=True, every_s=2.0, clock=clock)
    live(*step(1))  # drawn from t=0 to t=1: the next draw is due at 1 + 9
    clock.now = 9.5
    live(*step(2))
    assert live.redraws == 1
    clock.now = 10.0
    live(*step(3))
    assert live.redraws == 2


def test_headless_only_records(shown, monkeypatch):
    monkeypatch.setattr(curves, "in_notebook", lambda: False)
    live = LiveCurves()
    live(*step(1))
    live(*validation(0, 1, 20.0))
    assert shown == [] and live.redraws == 0 and len(live.steps) == 1


def test_follows_a_real_training_run(toy_root, tiny_blip2, tmp_path):
    live = LiveCurves(show=False)
    config = TrainConfig(dataset="CIRR", data_path=str(toy_root), model_path=str(tiny_blip2), num_workers=0,
                         output_dir=str(tmp_path / "run"), batch_size=64, num_epochs=1)
    result = train(config, callback=live, stop_after_steps=3)
    assert not result.finished
    assert [r.step for r in live.steps] == [1, 2, 3]
    assert set(live.steps[0].losses) == {"loss", *LOSS_NAMES}
    assert all(r.lr > 0 for r in live.steps)


def test_step_timer_takes_the_median_gap():
    clock = FakeClock()
    timer = StepTimer(clock=clock)
    for t in (0.0, 5.0, 6.0, 7.0, 8.5, 9.5):  # the first gap is loader start-up
        clock.now = t
        timer("step", {})
        timer("validation", {})  # ignored
    assert timer.seconds_per_step(skip=1) == 1.0
    assert timer.seconds_per_step(skip=0) == 1.0
    with pytest.raises(ValueError, match="need at least"):
        StepTimer().seconds_per_step()


def test_a_cpu_step_is_timed_by_its_work_and_a_gpu_step_by_the_wall():
    assert StepTimer.on("cuda").clock is time.perf_counter
    timer = StepTimer.on(torch.device("cpu"))
    timer("step", {})
    time.sleep(0.3)  # another program holding the CPU looks like this from here: time passes, no work is done
    timer("step", {})
    assert timer.seconds_per_step(skip=0) < 0.1


def write_run(run_dir) -> None:
    """A run folder's CSVs: three epochs of mean losses and one validation."""
    rows = [{"epoch": e + 1, "loss": 3.0 - e, "loss_itc": 2.0 - e / 2, "loss_rtc": 3.0, "loss_align": 0.2, "lr": 1e-3}
            for e in range(3)]  # the trainer's rows count epochs from 1
    write_csv(rows, run_dir / "train_metrics.csv")
    write_csv([{"epoch": 3, "average_recall_at10": 40.0, "average_recall_at50": 80.0, "average": 60.0}],
              run_dir / "validation_metrics.csv")


def test_plot_history_reads_the_run_csvs(tmp_path):
    write_run(tmp_path)
    fig = plot_history(tmp_path, chance={"average_recall_at10": 5.0})
    loss_ax, recall_ax = fig.axes
    total = next(line for line in loss_ax.lines if line.get_label() == "loss")
    assert list(total.get_xdata()) == [1, 2, 3] and list(total.get_ydata()) == [3.0, 2.0, 1.0]
    labels = [line.get_label() for line in recall_ax.lines if not line.get_label().startswith("_")]
    assert labels == ["average_recall_at10", "average_recall_at50"]
    fig.draw_without_rendering()
    ticks = [t.get_text() for t in loss_ax.get_yticklabels() + loss_ax.get_yticklabels(minor=True)]
    assert "1" in ticks and "2" in ticks and not any("10^" in t for t in ticks)  # plain numbers on the log axis
    with pytest.raises(FileNotFoundError, match="train_metrics.csv"):
        plot_history(tmp_path / "nothing")


def test_cirr_schedule_quirk_leaves_the_rate_high_at_the_end():
    steps = 10
    quirk = learning_rates(PAPER["CIRR"], steps)
    fixed = learning_rates(PAPER["CIRR"], steps, over_run=True)
    assert len(quirk) == len(fixed) == 50 * steps
    assert max(quirk) == pytest.approx(1e-5, rel=1e-3)
    assert quirk[-1] > 0.25 * 1e-5  # 50 of 80 epochs: still a third of the peak
    assert fixed[-1] < 0.01 * 1e-5  # laid over the run: annealed to the floor
    fiq = learning_rates(PAPER["FashionIQ"], steps)
    assert fiq[0] == pytest.approx(2e-5 / 100)  # warm-up from lr/100
    assert fiq.index(max(fiq)) == pytest.approx(1.5 * steps, abs=1)  # peak after 1.5 epochs


def test_smooth_is_a_trailing_mean():
    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]


def test_every_curve_plot_is_a_course_figure_outside_pyplot_in_the_course_colours(tmp_path):
    write_run(tmp_path)
    live = LiveCurves(show=False)
    for i in range(1, 4):
        live(*step(i))
    before = plt.get_fignums()
    figs = [plot_history(tmp_path), plot_loss_terms(live), plot_schedules({"CIRR": (PAPER["CIRR"], False)}, 2),
            live.figure()]
    assert all(isinstance(fig, CourseFigure) for fig in figs)
    assert plt.get_fignums() == before  # nothing registered with pyplot, so nothing shows up in a later cell
    assert figs[0]._repr_png_().startswith(b"\x89PNG")
    loss_terms = figs[1]
    assert [ax.lines[0].get_color() for ax in loss_terms.axes] == [style.LOSS_COLORS[n] for n in LOSS_NAMES]


def test_show_here_draws_at_once_and_finish_draws_the_last_steps(shown):
    clock = FakeClock()
    live = LiveCurves(show=True, every_s=2.0, clock=clock)
    live.show_here()  # before the run: the figure comes first in the cell, the progress bar under it
    assert [kind for kind, _ in shown] == ["display"]
    live(*step(1))  # too soon after the first draw: only recorded
    clock.now = 1.0
    live(*step(2))
    assert [kind for kind, _ in shown] == ["display"]
    live.finish()  # the run stopped mid-epoch: no more events, so the last steps are drawn now
    assert [kind for kind, _ in shown] == ["display", "update"] and live.redraws == 2


def test_every_legend_sits_outside_its_axes(tmp_path):
    write_run(tmp_path)
    live = LiveCurves(show=False, chance={"recall_at10": 2.8})
    for i in range(1, 4):
        live(*step(i))
    live(*validation(0, 3, 30.0))
    figs = [live.figure(), plot_history(tmp_path), plot_schedules({"CIRR": (PAPER["CIRR"], False)}, 2)]
    for fig in figs:
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend()] + [(fig.axes[0], lg)
                                                                                   for lg in fig.legends]
        assert legends
        for ax, legend in legends:
            box, plot = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
            assert not box.overlaps(plot), f"a legend covers the plot of {ax.get_title()!r}"


def test_hide_progress_drops_the_bars_and_keeps_warnings(capsys):
    import sys

    from tqdm.std import tqdm

    with curves.hide_progress(stdout=True):
        for _ in tqdm(range(3), desc="a bar", leave=False):
            pass
        print("a message of the run")
        print("a warning", file=sys.stderr)
    out, err = capsys.readouterr()
    assert out == "" and err == "a warning\n"
    with curves.hide_progress():
        print("kept")
    assert capsys.readouterr().out == "kept\n"
