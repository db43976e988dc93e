"""In a notebook kernel a progress bar is one display line redrawn in place; elsewhere tqdm's text bar on stderr."""

from __future__ import annotations

import IPython.display

from sprc_lib import progress


class Handle:
    def __init__(self, shown: list[str]) -> None:
        self.shown = shown

    def update(self, data, raw=False) -> None:
        self.shown[-1] = data["text/plain"]


def test_a_bar_in_a_kernel_is_one_display_whatever_its_frames(monkeypatch):
    shown: list[str] = []

    def display(data, raw=False, display_id=False):
        shown.append(data["text/plain"])
        return Handle(shown)

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr(progress, "_in_kernel", lambda stream: True)
    for _ in progress.tqdm(range(30), desc="steps", mininterval=0):
        pass
    assert len(shown) == 1 and shown[0].startswith("steps: 100%") and "30/30" in shown[0]
    for _ in progress.tqdm(range(5), desc="gone", leave=False, mininterval=0):
        pass
    assert shown[1:] == [""]  # a bar that clears itself leaves an empty line, not its frames


def test_outside_a_kernel_it_is_the_text_bar(capsys):
    for _ in progress.tqdm(range(3), desc="steps", mininterval=0):
        pass
    assert "steps: 100%" in capsys.readouterr().err
