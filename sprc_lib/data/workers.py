"""Data-loading worker processes that stop with the run and speak with its voice.

A worker reads a batch's items in another process. Two things must not differ from reading them in
the main process:

- a mistake in the data (a `UserError`, such as an unreadable image) reaches the user as the same one
  line: torch would re-raise it in the main process wrapped in the worker's traceback text, so the
  worker hands the error itself over as the batch (`CarriedError`), and the main process raises it
  the first time it reads the batch;
- Ctrl-C and the termination signal, which a scheduler or a notebook's stop button sends to the whole
  process group, are the main process's to handle (it stops at the end of the step in flight):
  workers ignore them, rather than die and take the run down with them.
"""

from __future__ import annotations

import signal
from typing import Any

from torch.utils.data import get_worker_info

from sprc_lib.errors import UserError


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """Leave SIGINT and SIGTERM to the main process (a DataLoader's `worker_init_fn`)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


class CarriedError:
    """A `UserError` met in a worker, carried to the main process in the batch's place.

    Every loop reads a batch by key first (`batch["image"]`, `batch["caption"]`): that read raises
    the original error, in the main process, with its own message.
    """

    def __init__(self, error: UserError) -> None:
        self.error = error

    def __getitem__(self, key: Any) -> Any:
        raise self.error


class CarriesErrors:
    """A map-style dataset whose batches, read in a worker, carry a `UserError` instead of raising it.

    DataLoader workers read a batch through `__getitems__` (also through a `Subset`), which makes it the
    outermost call in the worker. Loaders built without `ignore_stop_signals` as their `worker_init_fn`
    get it here too, on their first batch.
    """

    def __getitems__(self, indices: list[int]) -> list[Any]:
        if get_worker_info() is None:
            return [self[i] for i in indices]
        ignore_stop_signals()
        try:
            return [self[i] for i in indices]
        except UserError as err:
            return [CarriedError(err)]
