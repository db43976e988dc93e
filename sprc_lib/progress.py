"""The progress bar every long job shows: tqdm's text bar, in a terminal, a log and a notebook alike.

Not `tqdm.auto`: in a notebook that draws an ipywidget, and a notebook saved and reopened without its
kernel shows each of those as "Error displaying widget: model not found". In a notebook kernel the text
bar is one display output redrawn in place (`_KernelLine`), not a stream: a stream keeps every redraw as
an output of its own, and a saved, exported or headless-run notebook shows them all, a wall of bars.
"""

from __future__ import annotations

import io
import sys

from tqdm.std import tqdm as _text_tqdm

__all__ = ["tqdm"]


class _KernelLine(io.TextIOBase):
    """A file for one bar in a notebook kernel: each frame tqdm writes replaces the bar's one line, an
    IPython display updated by its id; a bar that clears itself (`leave=False`) leaves an empty line."""

    encoding = "utf-8"  # tqdm draws its block characters, not "#"

    def __init__(self) -> None:
        self.line, self._handle = "", None

    def write(self, text: str) -> int:
        line = text.rsplit("\r", 1)[-1] if "\r" in text else self.line + text
        line = line.rstrip("\n").rstrip()
        if line != self.line or self._handle is None:
            self.line = line
            self._show()
        return len(text)

    def _show(self) -> None:
        from IPython.display import display  # only ever in a kernel, where IPython is

        data = {"text/plain": self.line}
        if self._handle is None:
            self._handle = display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)

    def flush(self) -> None:
        pass


def _in_kernel(stream: object) -> bool:
    """Whether `stream` is a notebook kernel's own stderr (not a file, a terminal or a wrapper that hides bars)."""
    return type(stream).__module__.startswith("ipykernel")


class tqdm(_text_tqdm):  # noqa: N801 (tqdm's own name)
    """tqdm's text bar; in a notebook kernel, drawn in one display line (see the module's docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("file") is None and not kwargs.get("disable") and _in_kernel(sys.stderr):
            kwargs["file"] = _KernelLine()
        super().__init__(*args, **kwargs)
