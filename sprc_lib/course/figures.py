"""Figures for notebooks 00-03: a CIR query, triplets, padding, attention over patches, query-token wins, SPRC's
passes (the box-and-arrow diagrams live in `sprc_lib.course.diagrams` and are re-exported here).

Each function draws one `sprc_lib.course.style.CourseFigure` (outside pyplot, so it never leaks into
another cell), which shows once when it is a cell's last expression (or passed to `display`);
`fig.savefig(...)` writes it to a file. Images may be PIL images or (3, H, W) tensors in [0, 1]
(use `sprc_lib.data.unnormalize` on model inputs). Nothing here computes a result: callers pass in
what to draw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from sprc_lib.course.diagrams import (  # noqa: F401 (re-exported: the notebooks call viz.sprc_diagram())
    composition_schemes,
    qformer_diagram,
    sprc_diagram,
)
from sprc_lib.course.style import (
    LOSS_COLORS,
    REFERENCE_COLOR,
    TARGET_COLOR,
    TOKEN_COLORS,
    CourseFigure,
    ImageLike,
    as_array,
    frame,
    smooth,
    tile,
    wrap,
)
from sprc_lib.data import unnormalize


def folder_tree(root: str | Path, shown: int = 4, depth: int = 4) -> str:
    """A dataset folder as an indented text tree, each long listing cut to `shown` entries and a count:
    the layout at a glance without 10,000 file names, and without the machine's absolute path."""
    lines = [f"{Path(root).name}/"]

    def order(path: Path) -> tuple:
        return (path.is_file(), int(path.name) if path.name.isdigit() else -1, path.name)

    def walk(folder: Path, indent: str, level: int) -> None:
        entries = sorted((e for e in folder.iterdir() if not e.name.startswith(".")), key=order)
        folders, files = [e for e in entries if e.is_dir()], [e for e in entries if e.is_file()]
        for kind, group in (("folders", folders), ("files", files)):
            for entry in group[:shown]:
                lines.append(f"{indent}{entry.name}{'/' if entry.is_dir() else ''}")
                if entry.is_dir() and level < depth:
                    walk(entry, indent + "    ", level + 1)
            if len(group) > shown:
                lines.append(f"{indent}... {len(group):,} {kind} in all")

    walk(Path(root), "    ", 1)
    return "\n".join(lines)


def _arrow_with_text(ax: Axes, text: str, width: int = 24) -> None:
    """An axis-free panel holding an arrow and the modification text above it: the 'query' in CIR."""
    ax.axis("off")
    ax.annotate("", xy=(0.95, 0.45), xytext=(0.05, 0.45), xycoords="axes fraction",
                arrowprops={"arrowstyle": "-|>", "lw": 2.5, "color": "#444444"})
    ax.text(0.5, 0.55, f"\u201c{wrap(text, width)}\u201d", ha="center", va="bottom", fontsize=10,
            style="italic", transform=ax.transAxes)


def show_query(reference: ImageLike, caption: str, target: ImageLike, title: str | None = None) -> Figure:
    """Composed image retrieval in one picture: a reference image plus a text, and the image they describe."""
    fig = CourseFigure(figsize=(8, 2.8), layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.3, 1]})
    tile(axes[0], reference, "reference image", REFERENCE_COLOR)
    _arrow_with_text(axes[1], caption)
    tile(axes[2], target, "target image", TARGET_COLOR)
    if title:
        fig.suptitle(title)
    return fig


def triplet_grid(triplets: Sequence[tuple[ImageLike, str, ImageLike]], columns: int = 2,
                 title: str | None = None) -> Figure:
    """Several (reference, caption, target) triplets side by side: what a dataset teaches, at a glance."""
    if not triplets:
        raise ValueError("no triplets to draw")
    rows = -(-len(triplets) // columns)
    fig = CourseFigure(figsize=(5.6 * columns, 1.9 * rows), layout="constrained")
    axes = fig.subplots(rows, 3 * columns, squeeze=False,
                        gridspec_kw={"width_ratios": [1, 1.4, 1] * columns})
    for i, ax_row in enumerate(axes):
        for j in range(columns):
            ref_ax, text_ax, tgt_ax = ax_row[3 * j : 3 * j + 3]
            k = i * columns + j
            if k >= len(triplets):
                for ax in (ref_ax, text_ax, tgt_ax):
                    ax.axis("off")
                continue
            reference, caption, target = triplets[k]
            tile(ref_ax, reference, "reference" if i == 0 else "", REFERENCE_COLOR)
            _arrow_with_text(text_ax, caption, width=20)
            tile(tgt_ax, target, "target" if i == 0 else "", TARGET_COLOR)
    if title:
        fig.suptitle(title)
    return fig


def image_row(images: Sequence[ImageLike], titles: Sequence[str] | None = None,
              colors: Mapping[int, str] | None = None, title: str | None = None) -> Figure:
    """Images in one row, some framed (`colors`: position -> colour): a CIRR img_set, a top-k list."""
    if not images:
        raise ValueError("no images to draw")
    titles = list(titles) if titles is not None else [""] * len(images)
    colors = dict(colors or {})
    fig = CourseFigure(figsize=(1.8 * len(images), 2.3), layout="constrained")
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for i, (ax, image, label) in enumerate(zip(axes, images, titles, strict=True)):
        tile(ax, image, label, colors.get(i))
    if title:
        fig.suptitle(wrap(title, 110), fontsize=10)
    return fig


def transform_grid(images: Sequence[Image.Image], transforms: Mapping[str, Callable[[Image.Image], torch.Tensor]],
                   titles: Sequence[str] | None = None) -> Figure:
    """Each image as stored, then through each transform (as the model sees it): what padding keeps
    and what a centre crop throws away on a wide or tall image."""
    if not images or not transforms:
        raise ValueError("need at least one image and one transform")
    columns = 1 + len(transforms)
    fig = CourseFigure(figsize=(2.2 * columns, 2.3 * len(images)), layout="constrained")
    axes = fig.subplots(len(images), columns, squeeze=False)
    for i, (row, image) in enumerate(zip(axes, images, strict=True)):
        w, h = image.size
        tile(row[0], image, f"{titles[i] if titles else 'original'}\n{w}x{h}")
        for ax, (name, transform) in zip(row[1:], transforms.items(), strict=True):
            pixels = transform(image)
            tile(ax, unnormalize(pixels), f"{name}\n{pixels.shape[-1]}x{pixels.shape[-2]}")
    return fig


def attention_maps(image: ImageLike, maps: torch.Tensor, titles: Sequence[str] | None = None,
                   title: str | None = None) -> Figure:
    """Attention weights over image patches, drawn on the image: where each query token looks.

    `maps` is (K, g, g): one grid of patch weights per panel (the [CLS] token left out). Each panel
    has its own colour scale, shown by its own labelled colour bar, because only where a query token
    looks is comparable, not how sharply.
    """
    if maps.dim() != 3 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must be (K, g, g), got shape {tuple(maps.shape)}")
    picture = as_array(image)
    height, width = picture.shape[:2]
    fig = CourseFigure(figsize=(2.3 * (1 + len(maps)), 2.6), layout="constrained")
    axes = fig.subplots(1, 1 + len(maps), squeeze=False)[0]
    tile(axes[0], picture, "input")
    for k, (ax, grid) in enumerate(zip(axes[1:], maps, strict=True)):
        ax.imshow(picture)
        shown = ax.imshow(grid.detach().float().cpu().numpy(), cmap="inferno", alpha=0.6, interpolation="nearest",
                          extent=(0, width, height, 0))
        frame(ax, titles[k] if titles else f"map {k}")
        # An inset colour bar (a child of the panel, not a figure axes): the panels stay fig.axes[1:].
        bar = fig.colorbar(shown, cax=ax.inset_axes((1.04, 0.0, 0.06, 1.0)))
        bar.ax.tick_params(labelsize=6)
        bar.set_label("attention weight", fontsize=7, labelpad=2)
    if title:
        fig.suptitle(title)
    return fig


def similarity_heatmap(scores: torch.Tensor, row_labels: Sequence[str], col_labels: Sequence[str] | None = None,
                       title: str | None = None, xlabel: str = "image", bar_label: str = "score") -> Figure:
    """A (texts, images) score matrix as a heat map: a retriever that works lights up the diagonal.
    `bar_label` names what the colours measure (a score, a probability)."""
    values = scores.detach().float().cpu().numpy()
    fig = CourseFigure(figsize=(4.5 + 0.4 * values.shape[1], 1.2 + 0.32 * values.shape[0]), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(values, cmap="viridis")
    ax.set_yticks(range(len(row_labels)), [wrap(label, 48) for label in row_labels], fontsize=7)
    ax.set_xticks(range(values.shape[1]), col_labels or [str(i) for i in range(values.shape[1])], fontsize=7)
    ax.set_xlabel(xlabel)
    fig.colorbar(shown, ax=ax, shrink=0.8, label=bar_label)
    if title:
        ax.set_title(title)
    return fig


def token_layouts(layouts: Mapping[str, Sequence[tuple[str, int]]], notes: Mapping[str, str] | None = None,
                  title: str | None = None) -> Figure:
    """The Q-Former's input sequence in each pass, as coloured blocks of (token kind, count):
    which tokens sit where, and so what the [CLS] read-out can see."""
    notes = notes or {}
    fig = CourseFigure(figsize=(10, 0.9 + 0.75 * len(layouts)), layout="constrained")
    ax = fig.subplots()
    for row, (name, blocks) in enumerate(layouts.items()):
        start = 0
        for kind, count in blocks:
            ax.barh(row, count, left=start, color=TOKEN_COLORS.get(kind, "#dddddd"), edgecolor="white", height=0.6)
            ax.text(start + count / 2, row, f"{kind}\n({count})", ha="center", va="center", fontsize=8)
            start += count
        if name in notes:
            ax.text(start + 1, row, notes[name], va="center", fontsize=8, color="#444444")
    ax.set_yticks(range(len(layouts)), list(layouts))
    ax.invert_yaxis()
    ax.set_xlabel("sequence position")
    longest = max(sum(count for _, count in blocks) for blocks in layouts.values())
    ax.set_xlim(0, longest * 1.45)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title)
    return fig


def query_token_wins(wins: Sequence[int] | torch.Tensor, title: str | None = None) -> Figure:
    """How often each query token gives the max score for its own caption-image pair: one bar per query
    token, so a model that uses one query token for everything shows a single bar."""
    counts = np.asarray(wins.tolist() if isinstance(wins, torch.Tensor) else list(wins))
    fig = CourseFigure(figsize=(1.5 + 0.3 * len(counts), 2.8), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(np.arange(len(counts)), counts, color=TOKEN_COLORS["queries"], edgecolor="#555555")
    ax.bar_label(bars, labels=[str(c) if c else "" for c in counts], fontsize=7)
    ax.set_xticks(np.arange(len(counts)), [str(i) for i in range(len(counts))], fontsize=7)
    ax.set(xlabel="query token", ylabel="pairs it wins")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def loss_curves(history: Sequence[Mapping[str, float]], keys: Sequence[str], window: int = 5,
                title: str | None = None) -> Figure:
    """Per-step losses, one panel each (their scales differ): faint per batch, bold a running mean,
    because one batch is noisy and the trend is the question."""
    if not history:
        raise ValueError("no steps to plot")
    fig = CourseFigure(figsize=(3.6 * len(keys), 2.8), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    steps = np.arange(1, len(history) + 1)
    for i, (ax, key) in enumerate(zip(axes, keys, strict=True)):
        values = [row[key] for row in history]
        color = LOSS_COLORS.get(key, f"C{i}")
        mean = smooth(values, window)[window - 1 :]  # only the points a whole window covers
        ax.plot(steps, values, color=color, alpha=0.3, linewidth=1)
        ax.plot(steps[window - 1 :], mean, color=color, linewidth=2)
        ax.set(xlabel="step", title=key)
    if title:
        fig.suptitle(title)
    return fig


def recall_bars(results: Mapping[str, Mapping[str, float]], keys: Sequence[str], title: str | None = None) -> Figure:
    """Recalls (percent) of several methods side by side, one group per metric: a baseline, SPRC, chance."""
    fig = CourseFigure(figsize=(1.6 + 1.5 * len(keys), 3.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(results)
    x = np.arange(len(keys))
    for i, (name, metrics) in enumerate(results.items()):
        values = [metrics[k] for k in keys]
        color = "#999999" if name == "chance" else f"C{i}"  # chance is the floor, not a competitor
        bars = ax.bar(x + (i - (len(results) - 1) / 2) * width, values, width, label=name, color=color)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, list(keys))
    ax.set(ylabel="%", ylim=(0, 105))
    # under the axes: inside them it would cover the tallest bars' labels
    ax.legend(fontsize=8, ncols=min(len(results), 4), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title)
    return fig
