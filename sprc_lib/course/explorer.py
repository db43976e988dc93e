"""Looking at retrieval: top-k grids with the target outlined, failure cases, and an interactive explorer.

Three layers, so the logic is testable without a browser:

- `Retriever`: a gallery and a scoring function -> ranked gallery names for a (reference, text)
  query. `Retriever.for_split` builds one from a model and a validation split, scoring exactly as
  `sprc_lib.evaluation.protocols` does and ranking with `sprc_lib.evaluation.metrics.rank_gallery`, so its target ranks
  are the ones the recall figures count.
- `Explorer`: what the widget shows (current query, text, reference, top-k), changed by plain
  method calls: `choose_query`, `type_text`, `choose_reference`, `set_k`.
- `ExplorerWidget`: ipywidgets wired to an `Explorer`; it forwards events, and redraws on every
  change of the explorer's state, whoever made it (a control, or a call in a later cell).

The grids are `CourseFigure`s in the course's style (`sprc_lib.course.style`): the reference framed
blue and the target green, as in every other notebook figure.
"""

from __future__ import annotations

import difflib
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from sprc_lib.course.style import REFERENCE_COLOR, TARGET_COLOR, CourseFigure, figure_png, tile, wrap
from sprc_lib.data import CIRRDataset, FashionIQDataset
from sprc_lib.data.schema import DATASETS
from sprc_lib.evaluation.context import EvalContext
from sprc_lib.evaluation.index import index_features, query_scores
from sprc_lib.evaluation.metrics import cirr_rankings, rank_gallery

ScoreFn = Callable[[Sequence[str], Sequence[str]], Tensor]
"""(reference names, texts) -> scores (len(texts), gallery size); higher is better."""


@dataclass(frozen=True)
class Query:
    """A composed query: a reference image (by gallery name) and a modification text, maybe with its target."""

    reference: str
    text: str
    target: str | None = None
    members: tuple[str, ...] = ()  # CIRR's img_set (6 names, the reference among them)
    label: str = ""


@dataclass(frozen=True)
class Retrieval:
    """The top-k answer to one query, and where its target landed in the whole ranking."""

    query: Query
    names: list[str]
    scores: list[float]
    target_rank: int | None  # 1 = first; None when the query has no known target
    ranked: int  # how many gallery images were ranked (CIRR: the gallery minus the reference)

    @property
    def target_position(self) -> int | None:
        """Index of the target in `names` (the tile to outline), or None when it is not in the top-k."""
        if self.query.target is None or self.query.target not in self.names:
            return None
        return self.names.index(self.query.target)


class Retriever:
    """A gallery of named images and a scoring function: the pure part of every grid and of the explorer."""

    def __init__(
        self,
        gallery_names: Sequence[str],
        score: ScoreFn,
        load_image: Callable[[str], Image.Image],
        queries: Sequence[Query] = (),
        remove_reference: bool = True,
        name: str = "gallery",
    ):
        self.gallery_names = list(gallery_names)
        self.score, self.load_image = score, load_image
        self.queries = list(queries)
        self.remove_reference, self.name = remove_reference, name
        self._column = {n: i for i, n in enumerate(self.gallery_names)}
        self._all_scores: Tensor | None = None

    @classmethod
    def for_split(cls, ctx: EvalContext, dataset: str, root: str | Path, split: str = "val",
                  category: str = "dress") -> Retriever:
        """Index a CIRR split (or one FashionIQ category) with the context's model, scoring as the validation does."""
        if dataset == "CIRR":
            gallery = ctx.load(CIRRDataset, root, split, "classic")
            source = ctx.load(CIRRDataset, root, split, "relative")
            queries = [Query(t.reference, t.caption, t.target, tuple(t.members), f"pair {t.pair_id}")
                       for t in source.triplets]
        elif dataset == "FashionIQ":
            gallery = ctx.load(FashionIQDataset, root, split, [category], "classic")
            source = ctx.load(FashionIQDataset, root, split, [category], "relative")
            queries = [Query(t.reference, source.caption(i), t.target, (), f"{category} {i}")
                       for i, t in enumerate(source.triplets)]
        else:
            raise ValueError(f"dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
        index = index_features(ctx, gallery)

        def score(references: Sequence[str], texts: Sequence[str]) -> Tensor:
            return query_scores(ctx, index, references, texts)

        return cls(index.names, score, gallery.load_image, queries, remove_reference=dataset == "CIRR",
                   name=gallery.name)

    # ------------------------------------------------------------------ ranking
    def check_reference(self, name: str) -> None:
        """A ValueError that says what to do when `name` is not a gallery image."""
        if name in self._column:
            return
        close = difflib.get_close_matches(name, self.gallery_names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; e.g. {', '.join(self.gallery_names[:3])}"
        raise ValueError(
            f"reference {name!r} is not an image of {self.name} ({len(self.gallery_names)} images): "
            f"a query's reference must be in the indexed gallery{hint}"
        )

    def rank(self, query: Query, scores: Tensor, k: int) -> Retrieval:
        """Rank one query's (N,) scores: reference removed on CIRR, ties broken as the metrics break them."""
        exclude = torch.tensor([self._column[query.reference]]) if self.remove_reference else None
        order = rank_gallery(scores[None].float(), exclude)[0]
        top = order[:k].tolist()
        target_rank = None
        if query.target is not None:
            if query.target not in self._column:
                raise ValueError(f"{query.label or 'query'}: target {query.target!r} is not in {self.name}")
            hits = (order == self._column[query.target]).nonzero()
            if len(hits) == 0:
                raise ValueError(f"{query.label or 'query'}: the target is the reference, which the ranking removes")
            target_rank = int(hits[0, 0]) + 1
        return Retrieval(query, [self.gallery_names[i] for i in top], [float(scores[i]) for i in top],
                         target_rank, len(order))

    def search(self, query: Query, k: int = 5) -> Retrieval:
        """Score and rank one query, e.g. a reference with a text a person typed."""
        self.check_reference(query.reference)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return self.rank(query, self.score([query.reference], [query.text])[0], k)

    def all_scores(self) -> Tensor:
        """(queries, gallery) scores of every dataset query, computed once."""
        if self._all_scores is None:
            self._all_scores = self.score([q.reference for q in self.queries], [q.text for q in self.queries])
        return self._all_scores

    def retrievals(self, k: int = 5, indices: Sequence[int] | None = None) -> list[Retrieval]:
        """Top-k of dataset queries (all, or `indices`), from the scores computed once."""
        scores = self.all_scores()
        picked = range(len(self.queries)) if indices is None else indices
        return [self.rank(self.queries[i], scores[i], k) for i in picked]

    def worst(self, n: int = 4, k: int = 5) -> list[Retrieval]:
        """The `n` queries whose target is ranked lowest: where to look for what the model gets wrong."""
        results = [r for r in self.retrievals(k) if r.target_rank is not None]
        return sorted(results, key=lambda r: r.target_rank, reverse=True)[:n]

    def group_ranks(self, index: int) -> dict[str, tuple[int | None, int | None]]:
        """CIRR: img_set member -> (rank in the whole gallery, rank within the set); the reference: (None, None)."""
        query = self.queries[index]
        if not query.members:
            raise ValueError(f"{query.label or 'query'} has no img_set (only CIRR queries do)")
        order, subset = cirr_rankings(self.all_scores()[index][None].float(), self.gallery_names,
                                      [query.reference], [list(query.members)])
        gallery_rank = {self.gallery_names[i]: r + 1 for r, i in enumerate(order[0].tolist())}
        subset_rank = {self.gallery_names[i]: r + 1 for r, i in enumerate(subset[0].tolist())}
        return {m: (gallery_rank.get(m), subset_rank.get(m)) for m in query.members}


# ---------------------------------------------------------------------- drawing
def retrieval_grid(retriever: Retriever, results: Sequence[Retrieval], title: str | None = None) -> Figure:
    """One row per query: the reference and its text, the top-k (target outlined green), and the target
    itself at the end of the row when it fell outside the top-k (with its rank)."""
    if not results:
        raise ValueError("no results to draw")
    k = max(len(r.names) for r in results)
    extra = any(r.query.target is not None and r.target_position is None for r in results)
    cols = 1 + k + int(extra)
    fig = CourseFigure(figsize=(1.7 * cols, 2.25 * len(results)), layout="constrained")
    axes = fig.subplots(len(results), cols, squeeze=False)
    for row, result in zip(axes, results, strict=True):
        query = result.query
        tile(row[0], retriever.load_image(query.reference), query.label or "reference", REFERENCE_COLOR, bold=False)
        row[0].set_xlabel(wrap(query.text, 22) or "(no text)", fontsize=8)
        for j, (name, score) in enumerate(zip(result.names, result.scores, strict=True)):
            hit = j == result.target_position
            tile(row[1 + j], retriever.load_image(name), f"{j + 1}. {score:.2f}" + (" target" if hit else ""),
                 TARGET_COLOR if hit else None)
        for ax in row[1 + len(result.names) :]:
            ax.axis("off")
        if extra and query.target is not None and result.target_position is None:
            tile(row[-1], retriever.load_image(query.target), f"target: rank {result.target_rank}", TARGET_COLOR,
                 bold=False)
    if title:
        fig.suptitle(title)
    return fig


def img_set_figure(retriever: Retriever, index: int) -> Figure:
    """A CIRR query's img_set drawn as a row: the reference (removed), the target, and each member's
    rank in the whole gallery and within the set (what Recall_subset@K counts)."""
    query = retriever.queries[index]
    ranks = retriever.group_ranks(index)
    fig = CourseFigure(figsize=(1.9 * len(query.members), 2.6), layout="constrained")
    axes = fig.subplots(1, len(query.members))
    for ax, name in zip(axes, query.members, strict=True):
        gallery_rank, subset_rank = ranks[name]
        if name == query.reference:
            tile(ax, retriever.load_image(name), "reference\n(removed)", REFERENCE_COLOR)
            continue
        is_target = name == query.target
        label = f"{'TARGET' if is_target else name}\nset rank {subset_rank}"
        tile(ax, retriever.load_image(name), label, TARGET_COLOR if is_target else None)
        ax.set_xlabel(f"gallery rank {gallery_rank}", fontsize=8)
    fig.suptitle(wrap(f"{query.label}: {query.text}", 25 * len(query.members)), fontsize=9)  # a long text wraps
    return fig


# ---------------------------------------------------------------------- the explorer
class Explorer:
    """The explorer's state and callbacks, with no widget: a query, its text and reference, and the top-k.

    Typing a text keeps the query's target (outlined, so you see where your wording moves it);
    choosing another reference image drops the target, since no annotation says what it should be.
    A failed call (unknown reference, bad k) raises ValueError and leaves the state as it was.
    """

    def __init__(self, retriever: Retriever, k: int = 5, query: int = 0):
        if not retriever.queries:
            raise ValueError("the retriever has no queries to start from")
        self.retriever, self.k = retriever, k
        self.query_index: int | None = None
        self.query = retriever.queries[query]
        self._listeners: list[Callable[[], None]] = []
        self.result = self.choose_query(query)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every change of the state (a widget showing it redraws)."""
        self._listeners.append(listener)

    def _changed(self, result: Retrieval) -> Retrieval:
        for listener in self._listeners:
            listener()
        return result

    def _run(self, query: Query, k: int | None = None) -> Retrieval:
        k = self.k if k is None else k
        result = self.retriever.search(query, k)
        self.query, self.result, self.k = query, result, k
        return result

    def choose_query(self, index: int) -> Retrieval:
        """Start from a dataset query: its reference, its text, its target."""
        if not 0 <= index < len(self.retriever.queries):
            raise ValueError(f"query {index}: choose 0 to {len(self.retriever.queries) - 1}")
        result = self._run(self.retriever.queries[index])
        self.query_index = index
        return self._changed(result)

    def type_text(self, text: str) -> Retrieval:
        """Your own modification text for the current reference image."""
        label = self.query.label
        if self.query_index is not None:
            label = f"{self.retriever.queries[self.query_index].label} (your text)"
        return self._changed(self._run(replace(self.query, text=text, label=label)))

    def choose_reference(self, name: str) -> Retrieval:
        """Another reference image from the gallery, with the current text."""
        self.retriever.check_reference(name)
        result = self._run(Query(name, self.query.text, label="your query"))
        self.query_index = None
        return self._changed(result)

    def set_k(self, k: int) -> Retrieval:
        return self._changed(self._run(self.query, k))

    def figure(self) -> Figure:
        return retrieval_grid(self.retriever, [self.result])

    def summary(self) -> str:
        """One line about the current result, for a person."""
        r = self.result
        if r.target_rank is None:
            return f"top {len(r.names)} of {r.ranked}: {', '.join(r.names)}"
        found = "in the top-k" if r.target_position is not None else "outside the top-k"
        return f"target ranked {r.target_rank} of {r.ranked} ({found})"


class ExplorerWidget:
    """ipywidgets around an `Explorer`: pick a query, edit the text, pick a reference, move k.

    Each control's handler calls one `Explorer` method; every change of the explorer's state, from a
    control or from code, redraws the controls, the status line and the grid; errors appear under the
    controls. Display it by leaving it as a cell's last expression.

    The grid is also shown as a plain PNG output beside the widget, updated with it, and the
    notebook drops the widget's own "model not found" placeholder when it is reopened without a kernel
    (`STATIC_FALLBACK`): a saved copy shows the explorer's last view, not an error.
    """

    def __init__(self, explorer: Explorer, max_k: int = 10):
        import ipywidgets as widgets

        self.explorer = explorer
        queries = explorer.retriever.queries
        self.query = widgets.Dropdown(
            options=[(f"{q.label}: {q.text[:60]}", i) for i, q in enumerate(queries)],
            value=explorer.query_index, description="query", layout=widgets.Layout(width="95%"))
        self.reference = widgets.Combobox(
            options=explorer.retriever.gallery_names, value=explorer.query.reference, ensure_option=False,
            continuous_update=False, description="reference", placeholder="a gallery image name")
        self.text = widgets.Text(value=explorer.query.text, description="text", continuous_update=False,
                                 layout=widgets.Layout(width="95%"))
        self.k = widgets.IntSlider(value=explorer.k, min=1, max=max_k, description="top-k")
        self.status = widgets.HTML()
        self.png = b""  # the grid of the current result
        self._syncing = False
        self.query.observe(lambda change: self._on(explorer.choose_query, change), names="value")
        self.text.observe(lambda change: self._on(explorer.type_text, change), names="value")
        self.reference.observe(lambda change: self._on(explorer.choose_reference, change), names="value")
        self.k.observe(lambda change: self._on(explorer.set_k, change), names="value")
        self.box = widgets.VBox([self.query, self.reference, self.text, self.k, self.status])
        self._static = None  # the PNG output beside the widget, once displayed
        explorer.on_change(self.draw)
        self.draw()

    def _on(self, action: Callable[[object], Retrieval], change: dict) -> None:
        if self._syncing or change["new"] is None:
            return
        try:
            action(change["new"])  # the explorer's change redraws
        except ValueError as error:
            self.status.value = f"<span style='color:#b2182b'>{html.escape(str(error))}</span>"

    def draw(self) -> None:
        """Show the explorer's current result and bring every control in line with its state."""
        e = self.explorer
        self._syncing = True
        try:
            self.query.value = e.query_index
            self.reference.value = e.query.reference
            self.text.value = e.query.text
            self.k.value = e.k
        finally:
            self._syncing = False
        self.png = figure_png(e.figure())
        self.status.value = html.escape(e.summary())
        if self._static is not None:
            self._static.update(self._png())

    def _png(self):
        from IPython.display import Image as PNG

        return PNG(data=self.png, format="png")

    def widget_bundle(self) -> dict:
        """The controls' display data, with a plain-text line where ipywidgets puts the widget's repr: what a
        saved copy shows in place of the controls where no widget can be drawn (an untrusted notebook)."""
        bundle = self.box._repr_mimebundle_()
        bundle["text/plain"] = WIDGET_TEXT
        return bundle

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        display(self.widget_bundle(), raw=True)
        self._static = display(self._png(), display_id=True)
        display(HTML(STATIC_FALLBACK))


WIDGET_TEXT = "(the explorer's controls: run the notebook to use them; the picture below is their last view)"


# JupyterLab shows "Error displaying widget: model not found" for a widget of a notebook reopened without
# its kernel (and without saved widget state). This script, in a trusted output after the widget, hides
# that placeholder in its own cell, so the PNG beside it is what a saved copy shows.
STATIC_FALLBACK = """<div class="sprc-static-fallback"></div><script>
(() => {
  const me = document.currentScript && document.currentScript.parentElement;
  const cell = me && (me.closest(".jp-Cell") || me.closest(".cell"));
  if (!cell) { return; }
  const hide = () => cell.querySelectorAll(".jp-OutputArea-output, .output_subarea").forEach((out) => {
    if (/Error displaying widget/.test(out.textContent || "")) { out.style.display = "none"; }
  });
  hide();
  new MutationObserver(hide).observe(cell, {childList: true, subtree: true, characterData: true});
})();
</script>"""
