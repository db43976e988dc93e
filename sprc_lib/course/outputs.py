"""What an executed notebook shows a reader: its text outputs as a terminal draws them, and the noise in them.

A progress bar is useful while a cell runs; a saved notebook (`make course`'s executed copies, a
student's own save, an HTML export) should not show one stopped half-way, nor the "Loading weights"
bars transformers draws for every `from_pretrained`. `noise` finds both, so a test can fail on them.
"""

from __future__ import annotations

import re

from nbformat import NotebookNode

BAR = re.compile(r"(\d{1,3})%\|[^|]*\|\s*\d+/")  # tqdm's "  40%|████      | 4/10 [...]"
LOADING = "Loading weights"


def visible_lines(text: str) -> list[str]:
    """The lines a terminal leaves on screen: a carriage return rewrites its line from the start."""
    shown = []
    for line in text.split("\n"):
        screen = ""
        for part in line.split("\r"):
            screen = part + screen[len(part) :]
        shown.append(screen.rstrip())
    return shown


def noise(notebook: NotebookNode) -> list[str]:
    """One line per problem: a "Loading weights" bar, or a progress bar left short of 100%."""
    problems = []
    for number, cell in enumerate(notebook.cells):
        streams: dict[str, str] = {}
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                streams[output["name"]] = streams.get(output["name"], "") + output["text"]
            elif output.get("output_type") == "display_data" and "text/plain" in output.get("data", {}):
                streams[f"display {len(streams)}"] = output["data"]["text/plain"]  # a bar drawn in place (progress)
        for text in streams.values():
            for line in visible_lines(text):
                bar = BAR.search(line)
                if LOADING in line:
                    problems.append(f"cell {number}: a transformers loading bar: {line.strip()[:80]}")
                elif bar and int(bar.group(1)) < 100:
                    problems.append(f"cell {number}: a progress bar left at {bar.group(1)}%: {line.strip()[:80]}")
    return problems
