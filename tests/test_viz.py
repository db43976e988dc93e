"""The notebooks' figures build on toy data and hold what they should: panels, titles, frames, labels."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from PIL import Image  # noqa: E402

from sprc_lib.course import figures as viz  # noqa: E402
from sprc_lib.course import style  # noqa: E402
from sprc_lib.data import CIRRDataset, build_transform  # noqa: E402


@pytest.fixture(scope="module")
def cirr_val(toy_root: Path) -> CIRRDataset:
    return CIRRDataset(toy_root, "val", "relative")


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def frame_color(ax) -> str:
    return to_hex(ax.spines["left"].get_edgecolor())


def test_show_query_has_reference_text_and_target(cirr_val):
    t = cirr_val.triplets[0]
    fig = viz.show_query(cirr_val.load_image(t.reference), t.caption, cirr_val.load_image(t.target), title="q")
    assert len(fig.axes) == 3
    assert titles(fig)[0] == "reference image" and titles(fig)[2] == "target image"
    assert frame_color(fig.axes[0]) == style.REFERENCE_COLOR and frame_color(fig.axes[2]) == style.TARGET_COLOR
    assert t.caption.split()[0] in texts(fig)
    assert fig.get_suptitle() == "q"


def test_triplet_grid_fills_rows_and_blanks_the_rest(cirr_val):
    triplets = [(cirr_val.load_image(t.reference), t.caption, cirr_val.load_image(t.target))
                for t in cirr_val.triplets[:5]]
    fig = viz.triplet_grid(triplets, columns=2)
    assert len(fig.axes) == 3 * 3 * 2  # 3 rows of 2 triplets, 3 panels each
    assert sum(ax.axison for ax in fig.axes) == 5 * 2  # images only; the text panels and the empty slot are off
    assert titles(fig)[:3] == ["reference", "", "target"]
    with pytest.raises(ValueError, match="no triplets"):
        viz.triplet_grid([])


def test_image_row_frames_the_chosen_images(cirr_val):
    t = cirr_val.triplets[0]
    members = list(t.members)
    colors = {members.index(t.reference): style.REFERENCE_COLOR, members.index(t.target): style.TARGET_COLOR}
    fig = viz.image_row([cirr_val.load_image(n) for n in members], members, colors, title=t.caption)
    assert len(fig.axes) == 6 and titles(fig) == members
    for i, ax in enumerate(fig.axes):
        assert (frame_color(ax) == colors[i]) if i in colors else frame_color(ax) not in colors.values()


def test_transform_grid_shows_original_then_each_transform():
    images = [Image.new("RGB", (112, 64), "red"), Image.new("RGB", (64, 100), "blue")]
    transforms = {"targetpad": build_transform("targetpad", 32), "squarepad": build_transform("squarepad", 32)}
    fig = viz.transform_grid(images, transforms)
    assert len(fig.axes) == 2 * 3
    assert titles(fig)[0] == "original\n112x64" and titles(fig)[3] == "original\n64x100"
    assert titles(fig)[1:3] == ["targetpad\n32x32", "squarepad\n32x32"]
    shown = fig.axes[1].images[0].get_array()
    assert shown.shape == (32, 32, 3) and shown.min() >= 0 and shown.max() <= 1  # un-normalised for display


def test_attention_maps_overlay_each_map_on_the_image():
    image = torch.rand(3, 64, 64)
    maps = torch.rand(3, 8, 8)
    fig = viz.attention_maps(image, maps, ["a", "b", "c"], title="where queries look")
    assert len(fig.axes) == 4 and titles(fig) == ["input", "a", "b", "c"]
    for ax, grid in zip(fig.axes[1:], maps, strict=True):
        assert len(ax.images) == 2  # the image, then the map over it
        assert np.allclose(ax.images[1].get_array(), grid.numpy())
        assert ax.images[1].get_extent() == [0, 64, 64, 0]  # stretched over the whole image
    with pytest.raises(ValueError, match="K, g, g"):
        viz.attention_maps(image, torch.rand(8, 8))


def test_similarity_heatmap_labels_rows_and_has_a_colorbar():
    scores = torch.randn(4, 5)
    fig = viz.similarity_heatmap(scores, [f"caption {i}" for i in range(4)], title="scores", xlabel="target")
    heat, colorbar = fig.axes
    assert heat.get_xlabel() == "target" and heat.get_title() == "scores"
    assert [t.get_text() for t in heat.get_yticklabels()] == [f"caption {i}" for i in range(4)]
    assert len(heat.get_xticklabels()) == 5 and colorbar.get_ylabel() == "score"
    assert np.allclose(heat.images[0].get_array(), scores.numpy())
    probabilities = viz.similarity_heatmap(scores.softmax(1), ["a", "b", "c", "d"], bar_label="probability")
    assert probabilities.axes[1].get_ylabel() == "probability"  # the colour bar names what is plotted


def test_token_layouts_draw_one_block_per_token_group():
    layouts = {"fusion": [("queries", 16), ("caption", 32)],
               "rtc": [("[CLS]", 1), ("prompt_tokens", 16), ("caption", 31)]}
    fig = viz.token_layouts(layouts, {"fusion": "+ cross-attention"})
    ax = fig.axes[0]
    assert len(ax.patches) == 5
    assert [p.get_width() for p in ax.patches] == [16, 32, 1, 16, 31]
    assert to_hex(ax.patches[0].get_facecolor()) == style.TOKEN_COLORS["queries"]
    assert "+ cross-attention" in texts(fig)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fusion", "rtc"]


def test_sprc_diagram_names_every_pass_and_loss():
    text = texts(viz.sprc_diagram())
    for name in ("fusion pass", "text pass", "RTC pass", "image pass", "loss_itc", "loss_rtc", "loss_align"):
        assert name in text


def test_loss_curves_plot_raw_and_running_mean_per_loss():
    history = [{"loss_itc": 3.0 - 0.1 * i, "loss_rtc": 2.0 + (i % 2)} for i in range(10)]
    fig = viz.loss_curves(history, ["loss_itc", "loss_rtc"], window=4)
    assert titles(fig) == ["loss_itc", "loss_rtc"]
    raw, mean = fig.axes[1].lines
    assert len(raw.get_xdata()) == 10 and len(mean.get_xdata()) == 10 - 4 + 1
    assert np.allclose(mean.get_ydata(), 2.5)  # alternating 2, 3 averages out
    with pytest.raises(ValueError, match="no steps"):
        viz.loss_curves([], ["loss_itc"])


def test_recall_bars_group_methods_per_metric_with_chance_in_grey():
    results = {"chance": {"r1": 1.0, "r10": 10.0}, "late fusion": {"r1": 5.0, "r10": 30.0},
               "SPRC": {"r1": 20.0, "r10": 80.0}}
    fig = viz.recall_bars(results, ["r1", "r10"])
    ax = fig.axes[0]
    assert len(ax.containers) == 3
    assert [b.get_height() for b in ax.containers[2]] == [20.0, 80.0]
    assert to_hex(ax.containers[0][0].get_facecolor()) == "#999999"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(results)
    fig.draw_without_rendering()
    legend, plot = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.y1 <= plot.y0  # under the plot: it covers no bar and no bar's label


def test_folder_tree_shows_the_layout_with_counts_and_no_absolute_path(toy_root):
    tree = viz.folder_tree(toy_root / "cirr_dataset", shown=2)
    lines = tree.splitlines()
    assert lines[0] == "cirr_dataset/"
    assert "    cirr/" in lines and "        captions/" in lines
    dev = len(list((toy_root / "cirr_dataset" / "dev").iterdir()))
    assert f"        ... {dev:,} files in all" in lines
    assert str(toy_root) not in tree
    train = viz.folder_tree(toy_root / "cirr_dataset" / "train", shown=3, depth=1).splitlines()
    assert train == ["train/", "    0/", "    1/", "    2/", "    ... 100 folders in all"]  # numeric, not 0, 1, 10


def test_course_figures_render_themselves_as_png():
    fig = viz.image_row([Image.new("RGB", (10, 10))])
    assert isinstance(fig, style.CourseFigure)
    assert fig._repr_png_().startswith(b"\x89PNG")


def test_as_array_accepts_pil_and_tensors_and_rejects_other_shapes():
    assert style.as_array(Image.new("RGB", (4, 2), "white")).shape == (2, 4, 3)
    assert style.as_array(torch.ones(3, 2, 4) * 2).max() == 1.0  # clamped to the displayable range
    with pytest.raises(ValueError, match="3, H, W"):
        style.as_array(torch.ones(2, 4))


def test_tile_draws_pil_tensor_and_array_alike_and_frames_only_when_coloured():
    fig = style.CourseFigure()
    axes = fig.subplots(1, 3)
    white = np.ones((2, 4, 3), dtype=np.float32)
    for ax, image in zip(axes, (Image.new("RGB", (4, 2), "white"), torch.ones(3, 2, 4), white), strict=True):
        style.tile(ax, image)
        assert np.allclose(ax.images[0].get_array(), white)
        assert frame_color(ax) == style.OTHER_COLOR and ax.get_title() == ""
    style.tile(axes[0], white, "target", style.TARGET_COLOR)
    assert frame_color(axes[0]) == style.TARGET_COLOR and axes[0].title.get_fontweight() == "bold"
    style.tile(axes[1], white, "target", style.TARGET_COLOR, bold=False)
    assert axes[1].title.get_fontweight() == "normal"


def test_loss_curves_use_the_course_loss_colours():
    history = [{"loss": 1.0, "loss_itc": 1.0, "novel": 1.0} for _ in range(3)]
    fig = viz.loss_curves(history, ["loss", "loss_itc", "novel"], window=2)
    colors = [to_hex(ax.lines[0].get_color()) for ax in fig.axes]
    assert colors[:2] == [to_hex(style.LOSS_COLORS["loss"]), to_hex(style.LOSS_COLORS["loss_itc"])]
    assert colors[2] == to_hex("C2")  # a key with no course colour falls back to the cycle


def test_log_axes_read_as_plain_numbers():
    fig = style.CourseFigure(layout="constrained")
    ax = fig.subplots()
    ax.plot([1, 2], [0.27, 3.8])
    ax.set_yscale("log")
    style.plain_log_ticks(ax.yaxis)
    fig.draw_without_rendering()
    shown = {t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)} - {""}
    assert {"0.3", "1", "2", "3"} <= shown and not any("10^" in t or "e" in t for t in shown), shown


def test_a_label_under_a_wide_image_stays_inside_the_figure():
    """Constrained layout measured once leaves a long label under a wide image below the figure's edge;
    `SettledLayout` runs it again until the images stop moving."""
    fig = style.CourseFigure(figsize=(8, 2.25), layout="constrained")
    assert isinstance(fig.get_layout_engine(), style.SettledLayout)
    axes = fig.subplots(1, 5)
    for i, ax in enumerate(axes):
        style.tile(ax, np.ones((60 if i < 2 else 120, 100, 3)), f"{i + 1}. 0.9")
    axes[0].set_xlabel(style.wrap("Make the rhombus smaller, then replace the yellow square with a disc.", 22),
                       fontsize=8)
    fig.suptitle("a title over the whole row")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    label = axes[0].xaxis.label.get_window_extent(canvas.get_renderer())
    assert label.y0 >= 0 and label.y1 <= fig.bbox.height
