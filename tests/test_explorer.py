"""The explorer's logic without a browser: queries, typed text, references, the outlined target, the widget's wiring."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colors import to_rgba
from PIL import Image

from sprc_lib.course import figures
from sprc_lib.course.explorer import Explorer, ExplorerWidget, Query, Retriever, img_set_figure, retrieval_grid
from sprc_lib.course.style import REFERENCE_COLOR, TARGET_COLOR, CourseFigure
from sprc_lib.evaluation import EvalSettings, make_eval_context
from sprc_lib.evaluation.metrics import cirr_metrics
from sprc_lib.model.loading import load_model
from sprc_lib.model.tokenizer import load_tokenizer

COLORS = ("red", "blue", "green")
GALLERY = [f"{c}-{i}" for c in COLORS for i in range(3)]  # red-0 ... green-2


def colour_scores(references: Sequence[str], texts: Sequence[str]) -> torch.Tensor:
    """A stand-in model: an image scores 1 when the text names its colour, plus a little for looking like
    the reference (same colour) and a tie-breaker favouring low indices; the reference itself scores highest."""
    rows = []
    for ref, text in zip(references, texts, strict=True):
        row = []
        for i, name in enumerate(GALLERY):
            colour = name.split("-")[0]
            score = float(colour in text.split()) + 0.5 * (colour == ref.split("-")[0]) - 0.01 * i
            row.append(score + 10 * (name == ref))
        rows.append(row)
    return torch.tensor(rows)


def solid(name: str) -> Image.Image:
    return Image.new("RGB", (8, 8), name.split("-")[0])


QUERIES = [Query("red-0", "make it blue", "blue-2", label="q0"), Query("green-1", "make it red", "red-1", label="q1")]


@pytest.fixture
def retriever() -> Retriever:
    return Retriever(GALLERY, colour_scores, solid, QUERIES, remove_reference=True, name="colours")


def test_choosing_a_query_ranks_its_text_and_outlines_its_target(retriever):
    explorer = Explorer(retriever, k=3, query=0)
    result = explorer.result
    assert (result.query.reference, result.query.text, result.query.target) == ("red-0", "make it blue", "blue-2")
    assert result.names == ["blue-0", "blue-1", "blue-2"]  # the reference (score +10) is removed
    assert result.target_rank == 3 and result.target_position == 2 and result.ranked == len(GALLERY) - 1
    fig = explorer.figure()
    tiles = fig.axes[1:4]
    assert tiles[2].spines["left"].get_edgecolor() == to_rgba(TARGET_COLOR)
    assert all(t.spines["left"].get_edgecolor() != to_rgba(TARGET_COLOR) for t in tiles[:2])

    second = explorer.choose_query(1)
    assert second.names == ["red-0", "red-1", "red-2"] and second.target_position == 1
    assert explorer.query_index == 1


def test_typing_text_changes_the_top_k_and_keeps_the_target(retriever):
    explorer = Explorer(retriever, k=3, query=0)
    result = explorer.type_text("make it green")
    assert result.names == ["green-0", "green-1", "green-2"]
    assert result.query.reference == "red-0" and result.query.target == "blue-2"
    assert result.target_position is None and result.target_rank == 8  # blue-2 is now last
    assert result.query.label == "q0 (your text)"
    assert explorer.type_text("make it blue").target_rank == 3


def test_a_new_reference_drops_the_target_and_reference_removal_depends_on_the_dataset(retriever):
    explorer = Explorer(retriever, k=2)
    result = explorer.choose_reference("green-2")
    assert result.query.target is None and result.target_rank is None and explorer.query_index is None
    assert "green-2" not in result.names  # CIRR protocol: the reference is removed
    fiq = Retriever(GALLERY, colour_scores, solid, QUERIES, remove_reference=False)
    assert fiq.search(Query("green-2", "make it blue"), k=1).names == ["green-2"]  # FashionIQ keeps it


def test_errors_are_clear_and_leave_the_state_alone(retriever):
    explorer = Explorer(retriever, k=3)
    before = explorer.result
    with pytest.raises(ValueError, match=r"reference 'red-7' is not an image of colours \(9 images\).*red-0"):
        explorer.choose_reference("red-7")
    with pytest.raises(ValueError, match="k must be at least 1"):
        explorer.set_k(0)
    with pytest.raises(ValueError, match="choose 0 to 1"):
        explorer.choose_query(5)
    assert explorer.result is before and explorer.k == 3
    assert len(explorer.set_k(5).names) == 5


def test_worst_queries_and_failure_grid_show_the_target_with_its_rank(retriever):
    queries = [Query("red-0", "make it blue", "blue-0"), Query("red-0", "make it blue", "green-2"),
               Query("red-0", "make it blue", "red-2")]
    r = Retriever(GALLERY, colour_scores, solid, queries)
    worst = r.worst(n=2, k=2)
    assert [w.target_rank for w in worst] == [8, 5]  # green-2 last of 8, red-2 behind the blues and red-1
    fig = retrieval_grid(r, worst)
    last_tile = fig.axes[3]  # reference, 2 results, then the target itself
    assert last_tile.get_title() == "target: rank 8"
    assert last_tile.spines["left"].get_edgecolor() == to_rgba(TARGET_COLOR)


def test_grids_share_the_course_style_and_stay_out_of_pyplot(retriever):
    before = plt.get_fignums()
    grid = Explorer(retriever, k=3, query=0).figure()
    assert isinstance(grid, CourseFigure) and plt.get_fignums() == before
    query = figures.show_query(solid("red-0"), "make it blue", solid("blue-2"))
    pairs = [(REFERENCE_COLOR, grid.axes[0], query.axes[0]), (TARGET_COLOR, grid.axes[3], query.axes[2])]
    for color, in_grid, in_figure in pairs:  # the grid's reference and top-3 target, the query's two images
        for ax in (in_grid, in_figure):  # the same frame, drawn by the one tile helper
            assert ax.spines["left"].get_edgecolor() == to_rgba(color)
            assert ax.spines["left"].get_linewidth() == in_figure.spines["left"].get_linewidth()
            assert ax.title.get_fontsize() == in_figure.title.get_fontsize()
            assert ax.title.get_color() == color


def test_widget_forwards_events_and_shows_errors(retriever):
    view = ExplorerWidget(Explorer(retriever, k=3))
    first_image = view.png
    assert first_image[:4] == b"\x89PNG" and "target ranked 3" in view.status.value
    view.text.value = "make it green"
    assert view.explorer.result.names == ["green-0", "green-1", "green-2"]
    assert view.png != first_image
    view.reference.value = "purple-1"
    assert "not an image of colours" in view.status.value
    assert view.explorer.query.reference == "red-0"
    view.query.value = 1  # picking a query brings the text box in line
    assert view.text.value == "make it red" and view.reference.value == "green-1"
    view.k.value = 4
    assert len(view.explorer.result.names) == 4


class FakeDisplay:
    """What `display(..., display_id=True)` returns: a handle whose update() replaces the output."""

    def __init__(self):
        self.shown = []

    def update(self, obj) -> None:
        self.shown.append(obj.data)


def test_the_widget_follows_changes_made_in_code(retriever):
    """An exercise further down calls the explorer: the widget's controls, status and PNG follow at once."""
    explorer = Explorer(retriever, k=3)
    view = ExplorerWidget(explorer)
    view._static = FakeDisplay()
    explorer.choose_query(1)
    assert (view.query.value, view.text.value, view.reference.value) == (1, "make it red", "green-1")
    assert "target ranked" in view.status.value and view._static.shown[-1] == view.png
    explorer.choose_reference("blue-0")
    assert view.query.value is None and view.reference.value == "blue-0" and view.text.value == "make it red"
    explorer.set_k(2)
    assert view.k.value == 2 and len(explorer.result.names) == 2
    before = len(view._static.shown)
    view.k.value = 3  # the first click after that acts on the state shown, not a stale one
    assert explorer.query.reference == "blue-0" and len(explorer.result.names) == 3
    assert len(view._static.shown) == before + 1 and view._static.shown[-1] == view.png


def test_model_retriever_ranks_as_the_metrics_count(toy_root, tiny_blip2):
    ctx = make_eval_context(load_model(tiny_blip2), load_tokenizer(tiny_blip2), EvalSettings(device="cpu"))
    r = Retriever.for_split(ctx, "CIRR", toy_root)
    metrics = cirr_metrics(r.all_scores(), r.gallery_names, [q.reference for q in r.queries],
                           [q.target for q in r.queries], [list(q.members) for q in r.queries])
    ranks = [x.target_rank for x in r.retrievals(k=1)]
    for k in (1, 5, 10, 50):
        assert metrics[f"recall_at{k}"] == pytest.approx(100 * sum(rank <= k for rank in ranks) / len(ranks))
    subset_first = [r.group_ranks(i)[q.target][1] == 1 for i, q in enumerate(r.queries)]
    assert metrics["recall_subset_at1"] == pytest.approx(100 * sum(subset_first) / len(subset_first))
    typed = r.search(Query(r.queries[0].reference, "something else entirely"), k=5)
    assert typed.scores != r.retrievals(k=5, indices=[0])[0].scores
    fig = img_set_figure(r, 0)
    assert len(fig.axes) == len(r.queries[0].members)
    with pytest.raises(ValueError, match="not an image of CIRR val"):
        r.search(Query("dev-0-0-imgX", "anything"))


def test_a_saved_copy_without_widgets_reads_a_sentence_not_a_widget_repr(retriever):
    """Where no widget can be drawn (an untrusted copy, another machine), JupyterLab shows the text/plain part."""
    from sprc_lib.course.explorer import WIDGET_TEXT

    bundle = ExplorerWidget(Explorer(retriever, k=3)).widget_bundle()
    assert bundle["text/plain"] == WIDGET_TEXT and "VBox" not in bundle["text/plain"]
    assert "model_id" in bundle["application/vnd.jupyter.widget-view+json"]  # the live controls are still there
