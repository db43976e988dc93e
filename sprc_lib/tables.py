"""Plain-text tables for terminals and notebooks: a person reads these, so numbers line up."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; numeric columns right-aligned."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(_is_number(row[i]) for row in rows) for i in range(len(headers))]
    lines = []
    for row in [list(headers), *rows]:
        cells = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _is_number(cell: str) -> bool:
    return cell.replace(",", "").replace(".", "", 1).replace("-", "", 1).replace("%", "").isdigit() or cell == "-"


def metrics_table(metrics: dict[str, float], chance: dict[str, float] | None = None) -> str:
    """One row per metric (percent), with chance level beside it where known."""
    chance = chance or {}
    rows = [[name, f"{value:.2f}", f"{chance[name]:.2f}" if name in chance else "-"] for name, value in metrics.items()]
    return format_table(["metric", "value", "chance"], rows)


def stages_table(stages: dict[str, dict[str, float]], chance: dict[str, float] | None = None) -> str:
    """One row per metric (percent), one column per ranking (e.g. SPRC and SPRC²), the change and chance."""
    chance = chance or {}
    names = list(stages)
    first, last = stages[names[0]], stages[names[-1]]
    rows = [[metric, *(f"{stages[n][metric]:.2f}" for n in names), f"{last[metric] - first[metric]:+.2f}",
             f"{chance[metric]:.2f}" if metric in chance else "-"] for metric in first]
    return format_table(["metric", *names, "change", "chance"], rows)
