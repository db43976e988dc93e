"""The course's one figure style: palette, image tiles, text wrapping, smoothing and PNG rendering.

The figures (`figures`), the training curves (`curves`) and the retrieval grids (`explorer`) draw
from here, so a reference is the same blue and a target the same green in every notebook, and each
figure is a `CourseFigure`: drawn outside pyplot, so nothing leaks from one cell into the next, and
laid out until its labels fit (`SettledLayout`).
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import LogFormatter
from PIL import Image

ImageLike = Image.Image | torch.Tensor | np.ndarray

REFERENCE_COLOR = "#2166ac"  # blue: the query's own image
TARGET_COLOR = "#1a9850"  # green: the image the query should find
OTHER_COLOR = "#bbbbbb"  # grey: the faint frame of every other image
TOKEN_COLORS = {  # one colour per kind of Q-Former input token, shared by every diagram
    "queries": "#9ecae1",
    "prompt P": "#fdae6b",
    "prompt_tokens": "#fdd0a2",
    "[CLS]": "#bcbddc",
    "caption": "#c7e9c0",
    "reference image": "#deebf7",
    "candidate image": "#fee0d2",
}
LOSS_COLORS = {"loss": "black", "loss_itc": "tab:blue", "loss_rtc": "tab:orange", "loss_align": "tab:green",
               "loss_itm": "tab:purple"}


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """A figure as PNG bytes (a notebook cell's output, the live curves, the explorer widget)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)  # figures here use constrained layout: no tight bbox pass
    return buffer.getvalue()


class SettledLayout(ConstrainedLayoutEngine):
    """Constrained layout, run again until the axes stop moving (at most `passes` times).

    One run does not settle a row of images: an image keeps its aspect, so where it sits in its cell,
    and so where its title and its label under it land, changes as the layout resizes the cells, and a
    label measured in the first run falls off the figure after it (a query's text under its reference,
    an img_set member's gallery rank). A figure without such axes settles in the first run.
    """

    passes = 5

    def execute(self, fig: Figure) -> None:
        for _ in range(self.passes):
            before = _positions(fig)
            super().execute(fig)
            if np.allclose(before, _positions(fig), atol=1e-3):
                break


def _positions(fig: Figure) -> np.ndarray:
    return np.array([ax.get_position(original=True).bounds for ax in fig.axes]).reshape(-1, 4)


class CourseFigure(Figure):
    """A plain `Figure` that Jupyter can show by itself: it renders its own PNG (`_repr_png_`), so it
    shows as a cell's last expression (or through `display`) without pyplot or `%matplotlib`.
    `layout="constrained"` lays it out with `SettledLayout`."""

    def __init__(self, *args, layout=None, **kwargs):
        super().__init__(*args, layout=SettledLayout() if layout == "constrained" else layout, **kwargs)

    def _repr_png_(self) -> bytes:
        return figure_png(self, dpi=100)


def as_array(image: ImageLike) -> np.ndarray:
    """(H, W, 3) floats in [0, 1] for imshow, from a PIL image, a (3, H, W) tensor in [0, 1] or such an array."""
    if isinstance(image, np.ndarray):
        return image
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def frame(ax: Axes, title: str = "", color: str | None = None, bold: bool | None = None) -> None:
    """An image panel's look without the image: no ticks, a title, and a thick `color` frame
    (reference, target) or a faint grey one. `bold=None` sets the title bold exactly when framed."""
    ax.set_xticks([])
    ax.set_yticks([])
    bold = color is not None if bold is None else bold
    ax.set_title(title, fontsize=9, color=color or "black", fontweight="bold" if bold else "normal")
    for spine in ax.spines.values():
        spine.set_edgecolor(color or OTHER_COLOR)
        spine.set_linewidth(4 if color else 0.5)


def tile(ax: Axes, image: ImageLike, title: str = "", color: str | None = None, bold: bool | None = None) -> None:
    """One image drawn in the course's panel style (see `frame`)."""
    ax.imshow(as_array(image))
    frame(ax, title, color, bold)


class PlainLogFormatter(LogFormatter):
    """Labels the ticks matplotlib's log formatter labels, written as plain numbers (0.3, 2, 40)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def plain_log_ticks(axis: Axis) -> None:
    """A log-scale axis labelled in plain numbers (0.3, 2, 40) where matplotlib writes 3x10^-1 or 4x10^1:
    the same ticks, labelled on the decades and, over a short range, between them as well."""
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def wrap(text: str, width: int) -> str:
    """`text` broken into lines of at most `width` characters, for titles and labels."""
    return "\n".join(textwrap.wrap(text, width))


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average: step losses are noisy (one batch each), their trend is what matters.
    The first `window - 1` points average the steps so far."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
