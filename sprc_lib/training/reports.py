"""TensorBoard curves of a run (`--report-to tensorboard`): the scalars its CSVs get, in `<run>/tensorboard/`.

Every scalar is written at the optimiser step it belongs to (the global step): each step's losses
and learning rate under `step/`, each epoch's row of `train_metrics.csv` under `epoch/`, each row of
`validation_metrics.csv` under `validation/`. A resumed run writes into the same folder and so
continues the same curves; its writer purges what the stopped run logged after its last checkpoint
(`purge_step`), so a step run again after `--resume` shows once. The CSVs stay the run's record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sprc_lib.errors import UserError

TENSORBOARD = "tensorboard"  # the run folder's sub-folder
REPORT_TO = ("none", "tensorboard")  # as transformers' --report-to names them


def summary_writer() -> type:
    """TensorBoard's writer, or a UserError saying how to get it (checked with the settings, before any work)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise UserError("`report_to` tensorboard: the tensorboard package is not installed; `pip install "
                        "tensorboard` (or train with `report_to` none)") from err
    return SummaryWriter


class TensorBoardReport:
    """Called as the trainer's callback is, `(event, info)`: writes the event's scalars at its global step."""

    def __init__(self, run_dir: Path, global_step: int):
        # Steps after the checkpoint's may have been logged before the stop: the resumed run logs them again.
        self.writer = summary_writer()(log_dir=str(Path(run_dir) / TENSORBOARD), purge_step=global_step + 1)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "step":
            scalars = {**info["losses"], "lr": info["lr"]}
        else:  # "epoch" (a train_metrics.csv row) or "validation" (its recalls)
            scalars = {k: v for k, v in info["metrics"].items() if k != "epoch"}
        for name, value in scalars.items():
            self.writer.add_scalar(f"{event}/{name}", value, info["step"])
        if event != "step":  # on disk before the epoch's checkpoint, which a resumed run starts after
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def reporting(report_to: str, run_dir: Path, global_step: int) -> Iterator[Callable[[str, dict], None] | None]:
    """The run's report while it trains (None with "none"), closed, so flushed, however the training ends."""
    if report_to == "none":
        yield None
        return
    report = TensorBoardReport(run_dir, global_step)
    try:
        yield report
    finally:
        report.close()
