"""Training curves: a live plot driven by the Trainer's callback, a step timer, and plots of a run's CSVs.

`LiveCurves` is a `Trainer` callback (`train(config, callback=LiveCurves())`). It records every
step's losses and every validation, and redraws one figure in place while the run goes on. It draws
a `CourseFigure` (not pyplot, so nothing leaks into other cells) and pushes it to the notebook as a
PNG through one `IPython.display` handle that is updated in place. Redraws are
throttled so that drawing takes at most a tenth of the run: on a CPU a PNG costs about as much as several
toy training steps. Where no notebook front end is attached (a
script, a terminal IPython, a test) it only records, and `figure()` draws the same plot at the end.
`show_here()` puts the figure in the cell before the run starts (so the run's progress bar is drawn
under it, in one piece), and `finish()` draws the last steps of a run that stopped mid-epoch (no event
follows its last step, and the throttle may have skipped it).

Every legend sits outside its axes, so it never covers a curve. `hide_progress()` keeps the progress
bars (and, if asked, the messages) of runs whose output is not the point, such as timing runs, out
of a notebook's outputs.

The static plots (`plot_history`, `plot_loss_terms`, `plot_schedules`) are `CourseFigure`s too: a
notebook shows one when it is the cell's last expression or passed to `display`.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import TextIO

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sprc_lib.course.style import LOSS_COLORS, CourseFigure, figure_png, plain_log_ticks, smooth
from sprc_lib.errors import MissingFileError
from sprc_lib.evaluation.metrics import HEADLINE_KEYS
from sprc_lib.model import LOSS_NAMES
from sprc_lib.training.recipes import Recipe
from sprc_lib.training.runs import read_csv
from sprc_lib.training.step import make_scheduler


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a front end can show images), False in scripts and terminal IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def recall_keys(metrics: dict[str, float]) -> tuple[str, ...]:
    """The recall keys worth plotting for a validation row, CIRR's or FashionIQ's."""
    for keys in HEADLINE_KEYS.values():
        if all(k in metrics for k in keys):
            return keys
    return tuple(k for k in metrics if "recall" in k)


@dataclass
class StepRecord:
    step: int
    epoch: int
    lr: float
    losses: dict[str, float]


@dataclass
class ValidationRecord:
    step: int
    epoch: int
    metrics: dict[str, float]


@dataclass
class LiveCurves:
    """A `Trainer` callback that keeps the run's curves and redraws them in a notebook while it trains.

    `chance` (the `sprc_lib.evaluation.protocols.chance` dict) draws chance level beside each recall.
    `every_s` is the least time between two redraws, stretched to nine times the last redraw's cost so
    drawing never takes more than a tenth of the run; epoch ends and validations always redraw.
    `show=None` shows only inside a notebook kernel.
    """

    chance: dict[str, float] | None = None
    every_s: float = 2.0
    window: int = 10
    title: str = ""
    show: bool | None = None
    steps: list[StepRecord] = field(default_factory=list)
    validations: list[ValidationRecord] = field(default_factory=list)
    redraws: int = 0
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.show = in_notebook() if self.show is None else self.show
        self._handle = None
        self._next_draw = -float("inf")

    def __call__(self, kind: str, info: dict) -> None:
        """The Trainer's callback: `kind` is "step", "epoch" or "validation"."""
        if kind == "step":
            self.steps.append(StepRecord(info["step"], info["epoch"], info["lr"], dict(info["losses"])))
        elif kind == "validation":
            self.validations.append(ValidationRecord(info["step"], info["epoch"], dict(info["metrics"])))
        self.refresh(force=kind != "step")

    def refresh(self, force: bool = False) -> None:
        """Redraw in the notebook if shown and `every_s` has passed (or `force`)."""
        if not self.show or not (force or self.clock() >= self._next_draw):
            return
        from IPython.display import Image, display

        start = self.clock()
        image = Image(data=figure_png(self.figure()))
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)
        end = self.clock()
        self._next_draw = end + max(self.every_s, 9 * (end - start))
        self.redraws += 1

    def show_here(self) -> None:
        """Draw the curves now as a new image in the current cell, which later refreshes update (call it
        before a run, or when a resumed run continues in a new cell): the run's progress bar then goes
        under the figure instead of being cut in two by it."""
        self._handle = None
        self._next_draw = -float("inf")
        self.refresh(force=True)

    def finish(self) -> None:
        """Draw the run's last state: a run that stops mid-epoch sends no event after its last step,
        which the throttle may have left undrawn."""
        self.refresh(force=True)

    def loss_series(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one loss term: `loss` (the weighted total) or one of `LOSS_NAMES`."""
        return [r.step for r in self.steps], [r.losses[name] for r in self.steps]

    def recall_series(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs counted from 1, values) of one validation metric."""
        return [r.epoch + 1 for r in self.validations], [r.metrics[key] for r in self.validations]

    def figure(self) -> Figure:
        """The current curves: losses per step (smoothed), learning rate, and validation recalls per epoch."""
        fig = CourseFigure(figsize=(14, 3.4), layout="constrained")
        loss_ax, lr_ax, recall_ax = fig.subplots(1, 3)
        for name in ("loss", *LOSS_NAMES):
            if self.steps and name in self.steps[0].losses:
                x, y = self.loss_series(name)
                loss_ax.plot(x, y, color=LOSS_COLORS[name], alpha=0.2, linewidth=0.8)
                loss_ax.plot(x, smooth(y, self.window), color=LOSS_COLORS[name], label=name)
        loss_ax.set(xlabel="step", ylabel="loss", yscale="log", title="losses (faint: per batch)")
        plain_log_ticks(loss_ax.yaxis)
        if self.steps:
            legend_outside(loss_ax)
        lr_ax.plot([r.step for r in self.steps], [r.lr for r in self.steps], color="tab:purple")
        lr_ax.set(xlabel="step", title="learning rate")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        _draw_recalls(recall_ax, [r.metrics for r in self.validations],
                      [r.epoch + 1 for r in self.validations], self.chance)
        if self.title:
            fig.suptitle(self.title)
        return fig


def legend_outside(ax: Axes, title: str | None = None) -> None:
    """The axes' legend to the right of it, outside the plot, so it covers no curve (constrained layout
    makes room for it)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, title=title,
              title_fontsize=8)


def _draw_recalls(ax: Axes, rows: list[dict[str, float]], epochs: list[int], chance: dict[str, float] | None) -> None:
    ax.set(xlabel="epoch", ylabel="%", ylim=(0, 100), title="validation recall")
    if not rows:
        ax.text(0.5, 0.5, "after the first epoch", ha="center", va="center", transform=ax.transAxes, color="gray")
        return
    for i, key in enumerate(recall_keys(rows[0])):
        color = f"C{i}"
        ax.plot(epochs, [r[key] for r in rows], "o-", color=color, label=key)
        if chance and key in chance:
            ax.axhline(chance[key], color=color, linestyle=":", linewidth=1)
    ax.set_xticks(epochs)
    legend_outside(ax, title="dotted: chance" if chance else None)


@dataclass
class StepTimer:
    """A `Trainer` callback timing the clock between steps (data loading included, as a run sees it)."""

    clock: Callable[[], float] = time.perf_counter
    stamps: list[float] = field(default_factory=list)

    @classmethod
    def on(cls, device: torch.device | str) -> StepTimer:
        """Wall time on a GPU; on a CPU this process's CPU time, which another program's load cannot inflate."""
        return cls(clock=time.process_time if torch.device(device).type == "cpu" else time.perf_counter)

    def __call__(self, kind: str, info: dict) -> None:
        if kind == "step":
            self.stamps.append(self.clock())

    def seconds_per_step(self, skip: int = 1) -> float:
        """Median time between consecutive steps, skipping the first `skip` (loader start-up, warm-up)."""
        gaps = [b - a for a, b in zip(self.stamps[skip:], self.stamps[skip + 1 :], strict=False)]
        if not gaps:
            raise ValueError(f"{len(self.stamps)} steps timed: need at least {skip + 2} to measure one gap")
        return statistics.median(gaps)


class _WithoutBars:
    """A stderr that drops progress-bar frames (tqdm redraws with carriage returns) and passes the rest on."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self._in_bar = stream, False

    def write(self, text: str) -> int:
        frame = "\r" in text or (self._in_bar and text == "\n")  # a bar's frames, and the newline that closes it
        self._in_bar = "\r" in text
        return len(text) if frame else self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextmanager
def hide_progress(stdout: bool = False) -> Iterator[None]:
    """Runs inside draw no progress bars (and, with `stdout`, print nothing), warnings still show: for
    runs whose output is not the point, such as the short timing runs of a comparison."""
    stderr, sys.stderr = sys.stderr, _WithoutBars(sys.stderr)
    try:
        if stdout:
            with redirect_stdout(StringIO()):
                yield
        else:
            yield
    finally:
        sys.stderr = stderr


def plot_history(run_dir: str | Path, chance: dict[str, float] | None = None) -> Figure:
    """A finished (or stopped) run from its folder: mean losses per epoch and the validation recalls."""
    run_dir = Path(run_dir)
    train_rows = read_csv(run_dir / "train_metrics.csv")
    val_rows = read_csv(run_dir / "validation_metrics.csv")
    if not train_rows:
        raise MissingFileError(f"{run_dir}: no train_metrics.csv rows yet (a run writes one per finished epoch)")
    fig = CourseFigure(figsize=(12, 3.4), layout="constrained")
    loss_ax, recall_ax = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in train_rows]
    for name in ("loss", *LOSS_NAMES):
        loss_ax.plot(epochs, [r[name] for r in train_rows], "o-", color=LOSS_COLORS[name], label=name)
    loss_ax.set(xlabel="epoch", ylabel="mean loss", yscale="log", title="train_metrics.csv")
    plain_log_ticks(loss_ax.yaxis)
    loss_ax.set_xticks(epochs)
    legend_outside(loss_ax)
    _draw_recalls(recall_ax, val_rows, [r["epoch"] for r in val_rows], chance)
    recall_ax.set_title("validation_metrics.csv")
    return fig


def plot_loss_terms(curves: LiveCurves) -> Figure:
    """Each loss term on its own axis (their scales differ tenfold), raw and smoothed, per step."""
    fig = CourseFigure(figsize=(12, 3), layout="constrained")
    axes = fig.subplots(1, len(LOSS_NAMES))
    for ax, name in zip(axes, LOSS_NAMES, strict=True):
        x, y = curves.loss_series(name)
        ax.plot(x, y, color=LOSS_COLORS[name], alpha=0.25, linewidth=0.8)
        ax.plot(x, smooth(y, curves.window), color=LOSS_COLORS[name])
        ax.set(xlabel="step", title=name)
    return fig


def learning_rates(recipe: Recipe, steps_per_epoch: int, over_run: bool = False) -> list[float]:
    """The learning rate of every step of a run of `recipe.num_epochs`, from the Trainer's own scheduler."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=recipe.learning_rate)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch, over_run)
    rates = []
    for _ in range(recipe.num_epochs * steps_per_epoch):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def plot_schedules(schedules: dict[str, tuple[Recipe, bool]], steps_per_epoch: int = 100) -> Figure:
    """Learning rate against epoch for each `label: (recipe, over_run)`, relative to the recipe's peak."""
    fig = CourseFigure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for label, (recipe, over_run) in schedules.items():
        rates = learning_rates(recipe, steps_per_epoch, over_run)
        epochs = [i / steps_per_epoch for i in range(len(rates))]
        ax.plot(epochs, [r / recipe.learning_rate for r in rates], label=label)
    ax.set(xlabel="epoch", ylabel="lr / peak lr", ylim=(0, 1.05), title="OneCycleLR as each recipe lays it out")
    fig.legend(loc="outside lower center", fontsize=8)  # under the axes: the labels are long
    return fig
