"""The figures notebooks 02 and 03 added draw what they should: the Q-Former's parts, the three ways to
compose a CIR query, the query-token win counts, and a colour bar beside every attention map."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sprc_lib.course import figures as viz  # noqa: E402


def texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_qformer_diagram_names_every_part_and_which_positions_use_which():
    fig = viz.qformer_diagram()
    text = texts(fig)
    for part in ("ViT (frozen)", "ln_vision", "query tokens", "caption tokens", "self-attention", "cross-attention",
                 "every other layer", "query FFN", "intermediate_query", "text FFN", "vision_projection",
                 "text_projection", "query_length = 0"):
        assert part in text, part
    assert "query-token\npositions" in text and "text\npositions" in text  # which FFN serves which positions
    fig.canvas.draw()  # it renders


def test_composition_schemes_draw_three_panels_one_per_method():
    fig = viz.composition_schemes()
    assert len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    for title, method in zip(titles, ("CLIP4Cir", "Pic2Word, SEARLE", "SPRC"), strict=True):
        assert method in title and "the image" in title
    assert "pseudo-word S*" in texts(fig) and "prompt P (Q tokens)" in texts(fig) and "Combiner" in texts(fig)
    fig.canvas.draw()


def test_query_token_wins_draws_one_bar_per_query_token_and_labels_the_winners():
    wins = torch.tensor([0, 3, 0, 9])
    fig = viz.query_token_wins(wins, title="wins")
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [0, 3, 0, 9]
    assert [t.get_text() for t in ax.texts] == ["", "3", "", "9"]  # empty bars carry no label
    assert ax.get_xlabel() == "query token" and ax.get_title() == "wins"
    assert len(viz.query_token_wins([1, 2]).axes[0].patches) == 2  # a plain list works too


def test_attention_maps_have_a_colour_bar_per_panel_on_its_own_scale():
    maps = torch.stack([torch.rand(8, 8), 10 * torch.rand(8, 8)])
    fig = viz.attention_maps(torch.rand(3, 64, 64), maps, ["a", "b"])
    assert len(fig.axes) == 3  # the colour bars are insets of their panels
    assert fig.axes[0].child_axes == []  # the input image has none
    for ax, grid in zip(fig.axes[1:], maps, strict=True):
        (bar,) = ax.child_axes
        low, high = sorted(bar.get_ylim())
        assert np.isclose(low, grid.min()) and np.isclose(high, grid.max())
    assert [ax.child_axes[0].get_ylabel() for ax in fig.axes[1:]] == ["attention weight"] * 2  # each one labelled
