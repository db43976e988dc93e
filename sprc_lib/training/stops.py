"""Stopping a run cleanly: Ctrl-C and the termination signal take effect at the end of the step in flight."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import torch

from sprc_lib import distributed


class StopRequests:
    """Ctrl-C and the termination signal, deferred to the end of the step in flight.

    A stop that lands inside a step (half the parameters updated) cannot be saved consistently, so the
    handler only records it; the loop saves a checkpoint once the step is done. A second Ctrl-C raises
    KeyboardInterrupt at once. Handlers can only be installed from the main thread; elsewhere signals
    keep their usual meaning.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else "stop"

    def requested(self, world_size: int) -> bool:
        """Whether any process was asked to stop (all processes must stop at the same step)."""
        flag = torch.tensor([1.0 if self.received else 0.0])
        return bool(distributed.mean_over_ranks(flag).item() > 0) if world_size > 1 else bool(self.received)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in self.SIGNALS}
        for s in self.SIGNALS:
            signal.signal(s, self._handle)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
