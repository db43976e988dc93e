"""Box-and-arrow diagrams for notebooks 02 and 03: BLIP-2's Q-Former, SPRC's passes and losses, and the
three ways to compose a CIR query.

Each function draws one `sprc_lib.course.style.CourseFigure` on an axis-free canvas with (0, 1)
coordinates; `sprc_lib.course.figures` re-exports them, so a notebook calls `viz.qformer_diagram()`.
Nothing here computes a result: the boxes name the modules and tensors the notebooks run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from sprc_lib.course.style import TOKEN_COLORS, CourseFigure, wrap


def _box(ax: Axes, xy: tuple[float, float], text: str, color: str, width: float = 0.17, height: float = 0.1,
         fontsize: float = 8) -> None:
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.01",
                                facecolor=color, edgecolor="#555555"))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _link(ax: Axes, start: tuple[float, float], end: tuple[float, float], label: str = "") -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="#555555", lw=1.2))
    if label:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.025, label, ha="center", fontsize=7,
                color="#555555")


def sprc_diagram() -> Figure:
    """SPRC's forward pass as boxes and arrows: two Q-Former passes make the query, a third the target,
    and the three losses compare them. The map for reading notebook 03's cells one by one."""
    fig = CourseFigure(figsize=(11, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.set(xlim=(0, 1), ylim=(0.02, 1.07))
    ax.axis("off")
    image, query, prompt = "#deebf7", TOKEN_COLORS["queries"], TOKEN_COLORS["prompt P"]
    rtc, loss = TOKEN_COLORS["prompt_tokens"], "#fcbba1"
    boxes = {
        "ref": ((0.07, 0.82), "reference image", image, 0.12),
        "cap": ((0.07, 0.5), "caption", TOKEN_COLORS["caption"], 0.12),
        "tgt": ((0.07, 0.12), "target image", image, 0.12),
        "vit_r": ((0.25, 0.82), "ViT + ln_vision\nE_r (T x Dv)", image, 0.15),
        "vit_t": ((0.25, 0.12), "ViT + ln_vision\nE_t (T x Dv)", image, 0.15),
        "fusion": ((0.46, 0.82), "fusion pass: queries +\ncaption, cross-attn to E_r", query, 0.19),
        "rtc": ((0.46, 0.4), "RTC pass: [CLS] +\nprompt_tokens + caption", rtc, 0.19),
        "image": ((0.46, 0.12), "image pass: queries,\ncross-attn to E_t", query, 0.19),
        "text": ((0.68, 0.82), "text pass: P + caption,\nno image; f at [CLS]", prompt, 0.18),
        "h": ((0.68, 0.4), "h at [CLS]", rtc, 0.12),
        "g": ((0.68, 0.12), "g (Q x D)\none per query", query, 0.12),
        "itc": ((0.9, 0.82), "loss_itc\nmax_q <f, g_q> / temp", loss, 0.17),
        "rtc_loss": ((0.9, 0.4), "loss_rtc\nmax_q <h, g_q> / temp", loss, 0.17),
        "align": ((0.9, 1.0), "loss_align: MSE(mean P,\nmean prompt_tokens)", loss, 0.17),
    }
    for xy, text, color, width in boxes.values():
        _box(ax, xy, text, color, width)

    def edge(name: str, side: str) -> tuple[float, float]:
        (x, y), _, _, width = boxes[name]
        return {"l": (x - width / 2, y), "r": (x + width / 2, y), "t": (x, y + 0.05), "b": (x, y - 0.05),
                "tr": (x + width / 2, y + 0.05), "bl": (x - width / 2 + 0.02, y - 0.05)}[side]

    for a, sa, b, sb, label in [
        ("ref", "r", "vit_r", "l", ""), ("vit_r", "r", "fusion", "l", ""), ("cap", "r", "fusion", "b", ""),
        ("cap", "r", "text", "b", ""), ("cap", "r", "rtc", "l", ""), ("tgt", "r", "vit_t", "l", ""),
        ("vit_t", "r", "image", "l", ""), ("fusion", "r", "text", "l", "P"), ("fusion", "t", "align", "l", "P"),
        ("text", "r", "itc", "l", "f"), ("rtc", "r", "h", "l", ""), ("h", "r", "rtc_loss", "l", "h"),
        ("image", "r", "g", "l", ""), ("g", "r", "rtc_loss", "b", "g"), ("g", "tr", "itc", "bl", "g"),
    ]:
        _link(ax, edge(a, sa), edge(b, sb), label)
    return fig


Box = tuple[tuple[float, float], str, str, float, float]  # centre, text, colour, width, height


def _anchor(boxes: Mapping[str, Box], name: str, side: str) -> tuple[float, float]:
    """A point on a box's edge: "l", "r", "t", "b", or "t@x" / "b@x" for the top / bottom edge at x."""
    (x, y), _, _, width, height = boxes[name]
    edge, _, at = side.partition("@")
    if edge in ("t", "b"):
        return (float(at) if at else x, y + height / 2 if edge == "t" else y - height / 2)
    return (x - width / 2 if edge == "l" else x + width / 2, y)


def _boxes_and_links(ax: Axes, boxes: Mapping[str, Box],
                     links: Sequence[tuple[str, str, str, str, str]], fontsize: float = 8) -> None:
    """Draw named boxes, then arrows (from, side, to, side, label) between their edges."""
    for xy, text, color, width, height in boxes.values():
        _box(ax, xy, text, color, width, height, fontsize)
    for a, side_a, b, side_b, label in links:
        _link(ax, _anchor(boxes, a, side_a), _anchor(boxes, b, side_b), label)


IMAGE_BOX, PLAIN_BOX, MIX_BOX = "#deebf7", "#f0f0f0", "#fcbba1"


def qformer_diagram() -> Figure:
    """BLIP-2's first stage as boxes and arrows: the frozen ViT and ln_vision feed the image tokens to the
    Q-Former's cross-attention, which only the query-token positions use; query and text positions have
    their own FFNs; the projections make the image and text features. The map for notebook 02."""
    fig = CourseFigure(figsize=(11.5, 5.6), layout="constrained")
    ax = fig.subplots()
    ax.set(xlim=(-0.01, 1), ylim=(-0.02, 1.04))
    ax.axis("off")
    query, text = TOKEN_COLORS["queries"], TOKEN_COLORS["caption"]
    qx, tx = 0.485, 0.69  # the query-token column and the text column of the Q-Former
    boxes: dict[str, Box] = {
        "image": ((0.04, 0.5), "image\nS x S px", IMAGE_BOX, 0.07, 0.1),
        "vit": ((0.15, 0.5), "ViT (frozen)\npatches + [CLS]", IMAGE_BOX, 0.1, 0.1),
        "ln": ((0.265, 0.5), "ln_vision\n(trained)", IMAGE_BOX, 0.08, 0.1),
        "queries": ((qx, 0.06), "query tokens\nQ x H, learned", query, 0.18, 0.09),
        "caption": ((tx, 0.06), "caption tokens\nword + position emb.", text, 0.18, 0.09),
        "self": (((qx + tx) / 2, 0.28), "self-attention over all positions\n(the mask says who sees whom)",
                 PLAIN_BOX, 0.385, 0.09),
        "cross": ((qx, 0.5), "cross-attention:\nK, V from the image tokens", IMAGE_BOX, 0.18, 0.1),
        "query_ffn": ((qx, 0.7), "query FFN (query-token\npositions): intermediate_query", query, 0.18, 0.1),
        "text_ffn": ((tx, 0.7), "text FFN (text\npositions): intermediate", text, 0.18, 0.1),
        "vision_proj": ((qx, 0.95), "vision_projection, normalise\n-> image features (Q x D)", query, 0.19, 0.09),
        "text_proj": ((tx, 0.95), "text_projection at [CLS],\nnormalise -> text feature (D)", text, 0.19, 0.09),
    }
    links = [
        ("image", "r", "vit", "l", ""), ("vit", "r", "ln", "l", ""), ("ln", "r", "cross", "l", "T x Dv"),
        ("queries", "t", "self", f"b@{qx}", ""), ("caption", "t", "self", f"b@{tx}", ""),
        ("self", f"t@{qx}", "cross", "b", ""), ("cross", "t", "query_ffn", "b", ""),
        ("self", f"t@{tx}", "text_ffn", "b", ""),
        ("query_ffn", "t", "vision_proj", "b", ""), ("text_ffn", "t", "text_proj", "b", ""),
    ]
    _boxes_and_links(ax, boxes, links)
    ax.add_patch(FancyBboxPatch((0.375, 0.2), 0.425, 0.65, boxstyle="round,pad=0.01", facecolor="none",
                                edgecolor="#888888", linestyle="--"))
    ax.text(0.38, 0.845, "one Q-Former layer, repeated N times", fontsize=8, color="#444444", va="top")
    ax.text(tx + 0.01, 0.5, "no cross-attention\nfor text positions", ha="left", va="center", fontsize=7,
            color="#666666", style="italic")
    ax.text(0.38, 0.585, "every other layer\n(0, 2, 4, ...)", fontsize=7, color="#666666", va="center")
    ax.text(0.825, 0.5, wrap("Which positions go where: the first query_length positions (the Q query tokens) "
                             "take the cross-attention and the query FFN; the other positions (text) take the "
                             "text FFN only. An image alone: query_length = Q, no text. A caption alone: "
                             "query_length = 0, no image.", 30),
            fontsize=8, va="center", color="#333333")
    ax.text(0.005, 0.4, wrap("frozen ViT, then the trained LayerNorm: T image tokens of width Dv", 30),
            fontsize=7, color="#666666", va="top")
    return fig


def composition_schemes() -> Figure:
    """Three ways to compose a CIR query, one small panel each: late fusion (CLIP4Cir's Combiner), a
    pseudo-word (Pic2Word, SEARLE) and SPRC's sentence-level prompt; what differs is where the
    reference image enters the text."""
    fig = CourseFigure(figsize=(12, 4.3), layout="constrained")
    axes = fig.subplots(1, 3)
    caption, word, prompt = TOKEN_COLORS["caption"], TOKEN_COLORS["prompt_tokens"], TOKEN_COLORS["prompt P"]
    panels = [
        ("late fusion (CLIP4Cir's Combiner)", "the image never enters the text:\ntwo finished vectors are mixed", {
            "ref": ((0.25, 0.88), "reference image", IMAGE_BOX, 0.42, 0.1),
            "cap": ((0.75, 0.88), "caption", caption, 0.42, 0.1),
            "ienc": ((0.25, 0.64), "image encoder\n-> 1 vector", IMAGE_BOX, 0.42, 0.11),
            "tenc": ((0.75, 0.64), "text encoder\n-> 1 vector", caption, 0.42, 0.11),
            "mix": ((0.5, 0.36), "Combiner: a learned\nmix of the two vectors", MIX_BOX, 0.6, 0.12),
            "out": ((0.5, 0.1), "query feature", PLAIN_BOX, 0.42, 0.1),
        }, [("ref", "b", "ienc", "t", ""), ("cap", "b", "tenc", "t", ""), ("ienc", "b", "mix", "t@0.35", ""),
            ("tenc", "b", "mix", "t@0.65", ""), ("mix", "b", "out", "t", "")]),
        ("pseudo-word (Pic2Word, SEARLE)", "the image enters the text as one word,\nmade from the image alone", {
            "ref": ((0.25, 0.88), "reference image", IMAGE_BOX, 0.42, 0.1),
            "cap": ((0.75, 0.88), "caption", caption, 0.42, 0.1),
            "ienc": ((0.25, 0.64), "image encoder +\nmapping network", IMAGE_BOX, 0.42, 0.12),
            "word": ((0.25, 0.42), "pseudo-word S*\n(1 token)", word, 0.42, 0.1),
            "sent": ((0.5, 0.22), "text: \u201ca photo of S* that\u201d + caption", caption, 0.9, 0.09),
            "out": ((0.5, 0.05), "text encoder -> query feature", PLAIN_BOX, 0.7, 0.08),
        }, [("ref", "b", "ienc", "t", ""), ("ienc", "b", "word", "t", ""), ("word", "b", "sent", "t@0.25", ""),
            ("cap", "b", "sent", "t@0.75", ""), ("sent", "b", "out", "t", "")]),
        ("sentence-level prompt (SPRC)",
         "the image enters the text as Q prompt tokens,\nmade from the image and the caption", {
            "ref": ((0.25, 0.88), "reference image", IMAGE_BOX, 0.42, 0.1),
            "cap": ((0.75, 0.88), "caption", caption, 0.42, 0.1),
            "fusion": ((0.5, 0.62), "Q-Former fusion pass: query tokens\nread the image and the caption", MIX_BOX,
                       0.9, 0.12),
            "sent": ((0.5, 0.38), "text: [ prompt P (Q tokens) | caption ]", prompt, 0.9, 0.09),
            "out": ((0.5, 0.12), "Q-Former text pass\n-> query feature f at [CLS]", PLAIN_BOX, 0.7, 0.12),
        }, [("ref", "b", "fusion", "t@0.25", ""), ("cap", "b", "fusion", "t@0.75", ""),
            ("fusion", "b", "sent", "t", ""), ("sent", "b", "out", "t", "")]),
    ]
    for ax, (name, where, boxes, links) in zip(axes, panels, strict=True):
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 0.96))
        ax.axis("off")
        _boxes_and_links(ax, boxes, links)
        ax.set_title(f"{name}\n{where}", fontsize=9)
    return fig
