# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Evaluating SPRC: the metrics, the CIRR test server, and where the model goes wrong
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sprc-course/sprc-course/blob/main/notebooks/05_evaluation.ipynb)
#
# A recall figure is a count over rankings. This notebook computes the figures by hand on five
# images, then with the library on [CIRR](https://github.com/Cuberick-Orion/CIRR) and
# [FashionIQ](https://github.com/XiaoxiaoGuo/fashion-iq), writes the files the CIRR test server
# expects, and then looks at the rankings themselves: the best, the worst, and your own CIR queries
# (a reference image and a modification text).
#
# Tiny mode (the default) evaluates the tiny models trained on the toy data (trained once by the
# course, reused here). Full mode evaluates your models on the real validation splits.
#
# **Recap of notebook 04**, from memory before you start (its key takeaways hold the answers):
# 1. Name two quirks of the authors' CIRR recipe that the library keeps by default.
# 2. What does a checkpoint hold so that a resumed run continues exactly where it stopped?
# 3. Why is training from the feature cache exact, and what does it save?
#
# ## What you will learn
#
# - Recall@K, why CIRR removes the reference image from each ranking, and what Recall_subset@K
#   measures, worked by hand before the library does it;
# - the CIRR and FashionIQ validation protocols, and the chance level beside each figure;
# - how to write and check the two CIRR test-server files, and what a rejected file looks like;
# - how to read top-k grids and failure cases, and how to probe a model with your own text in an
#   interactive explorer.

# %%
# Colab only: install the course library from one pinned source, then check it (about a minute).
import os
import subprocess
import sys

COURSE_SOURCE = os.environ.get("SPRC_COURSE_SOURCE", "git+https://github.com/sprc-course/sprc-course@v0.1.0")
COURSE_VERSION = "0.1.0"
if "google.colab" in sys.modules:
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"sprc-course[course] @ {COURSE_SOURCE}"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        raise SystemExit(f"installing the course from {COURSE_SOURCE} failed:\n{pip.stderr.strip()[-1500:]}\n"
                         "Fix: check that the source exists and the machine is online, then run this cell again.")
    try:
        import sprc_lib
    except ImportError as err:
        raise SystemExit(f"the course installed, but `import sprc_lib` fails ({err}). "
                         "Fix: Runtime > Restart session, then run this cell again.") from None
    if sprc_lib.__version__ != COURSE_VERSION:
        raise SystemExit(f"sprc_lib {sprc_lib.__version__} is installed; this notebook needs {COURSE_VERSION}. "
                         "Fix: Runtime > Restart session, then run this cell again.")
    print(f"sprc_lib {sprc_lib.__version__} installed from {COURSE_SOURCE}")

# %%
import copy
import json
import re
import tempfile
from pathlib import Path

import torch
from IPython.display import display

from sprc_lib import (
    CIRRDataset,
    chance,
    cirr_metrics,
    cirr_test_submission,
    format_table,
    metrics_table,
    rank_gallery,
    validate,
    validate_cirr_submission,
    validation_galleries,
)
from sprc_lib.course import (
    Explorer,
    ExplorerWidget,
    Retriever,
    answers,
    course_mode,
    img_set_figure,
    retrieval_grid,
    setup,
)
from sprc_lib.course.exercises import check
from sprc_lib.evaluation.metrics import FASHIONIQ_RECALL_KS

# %% tags=["parameters"]
MODE = course_mode()  # "tiny" (CPU, toy data) or "full" (GPU, real data): set SPRC_MODE=full or edit this
K = 5  # top-k shown in the grids and the explorer
SHOWN_QUERIES = 4  # rows in the grid of ordinary queries
FAILURES = 4  # rows in the grid of failure cases
DATA_PATH = None  # full mode: the folder holding cirr_dataset/ and fashionIQ_dataset/

# %%
course = setup(MODE, DATA_PATH)  # the data, cache and device of this mode
DATA = course.data
SCRATCH_DIR = tempfile.TemporaryDirectory(prefix="sprc05-")  # submission files: deleted when the kernel stops
SCRATCH = Path(SCRATCH_DIR.name)  # nothing lands in the repo
course.need_data("CIRR"), course.need_data("FashionIQ")
# tiny: the tiny models (shipped with the course, or trained for other toy data); full: SPRC_CIRR_MODEL and
# SPRC_FIQ_MODEL name (a run's best/ from notebook 04, or the authors' models converted in notebook 06)
cirr_ctx = course.context(*course.trained("CIRR"))
fiq_ctx = course.context(*course.trained("FashionIQ", beside=cirr_ctx.model))  # one frozen ViT for both
# Each context holds a model ready to score: on the device, the ViT in fp16 on a GPU (as in training), its
# transform, the feature cache. Warming fills the cache with the val galleries (a ViT pass per new image).
cirr_ctx.warm(validation_galleries("CIRR", DATA, course.skip_missing))
fiq_ctx.warm(validation_galleries("FashionIQ", DATA, course.skip_missing))

# %% [markdown]
# ## 1. The metrics by hand, on five images
#
# A gallery of five images, A to E, and two CIR queries. The model gives every gallery image a
# score per query (higher = closer to what the query asks for); a ranking sorts them. On CIRR, a
# query's **reference image is removed from its ranking** (the protocol of the
# [CIRR paper](https://arxiv.org/abs/2108.04024)): the reference is never the answer, yet a model
# that composes it with the text may score it high (exercise 1 counts how often it would come first
# here). Each query also has a small **group** of images (its `img_set`; six on CIRR, four here)
# that contains the reference and the target; **Recall_subset@K** asks for the target within the
# top K of the group's ranking.

# %%
names = ["A", "B", "C", "D", "E"]
queries = [  # (reference, target, group, scores for A..E)
    ("A", "C", ["A", "B", "C", "D"], [0.95, 0.70, 0.80, 0.40, 0.60]),
    ("B", "E", ["B", "A", "D", "E"], [0.50, 0.90, 0.85, 0.30, 0.55]),
]
by_hand, kept_ranks = [], []
for reference, target, group, scores in queries:
    ranking = [n for _, n in sorted(zip(scores, names, strict=True), reverse=True)]
    removed = [n for n in ranking if n != reference]
    subset = [n for n in removed if n in group]
    rank, subset_rank = removed.index(target) + 1, subset.index(target) + 1
    by_hand.append((rank, subset_rank))
    kept_ranks.append(ranking.index(target) + 1)
    print(f"reference {reference}, target {target}: ranking {' '.join(ranking)} -> without the reference "
          f"{' '.join(removed)} (target rank {rank}); group ranking {' '.join(subset)} (target rank {subset_rank})")

recall_at = {k: 100 * sum(rank <= k for rank, _ in by_hand) / len(by_hand) for k in (1, 2, 3)}
subset_at = {k: 100 * sum(rank <= k for _, rank in by_hand) / len(by_hand) for k in (1, 2, 3)}
print(f"R@1 = {recall_at[1]:.0f}, R@2 = {recall_at[2]:.0f}, Rs@1 = {subset_at[1]:.0f}, Rs@2 = {subset_at[2]:.0f}")
assert by_hand[0][0] == 1 and kept_ranks[0] == 2  # query 1: first only once the reference is removed
assert by_hand[1] == (2, 1)  # query 2: a miss at R@1, a hit at Rs@1

# %% [markdown]
# Query 1 finds its target only because the reference is removed (with it, C would be second).
# Query 2 misses at R@1 (C outranks E) but hits at Rs@1: C is not in its group, so the subset
# ranking never sees it. The subset metric asks a finer question: among images that look alike
# (CIRR builds its groups from visually similar images), is the target the best one?
#
# The library computes the same numbers from the score matrix (rows: queries, columns: gallery):

# %%
library = cirr_metrics(torch.tensor([s for *_, s in queries]), names, [q[0] for q in queries],
                       [q[1] for q in queries], [q[2] for q in queries])
print({k: library[k] for k in ("recall_at1", "recall_at5", "recall_subset_at1", "recall_subset_at2")})
assert library["recall_at1"] == recall_at[1] and library["recall_subset_at1"] == subset_at[1]
assert library["recall_subset_at2"] == subset_at[2] and library["recall_at5"] == 100

# %% [markdown]
# R@5 is 100 here because only four images are left to rank. FashionIQ keeps the reference in
# the ranking, so under its protocol query 1's target would be second (`kept_ranks`).
#
# ## 2. CIRR val: reference removed, subset recall, chance
#
# `validate` indexes the gallery once (every val image through the ViT, `ln_vision`, the Q-Former
# and the projection; the ViT part read from the feature cache), then scores every query against
# it. The chance column is what a random ranking would score on a gallery this size.

# %%
cirr = validate(cirr_ctx, "CIRR", DATA)
cirr_chance = chance("CIRR", DATA, course.skip_missing)
print(metrics_table(cirr, cirr_chance))
if not course.standin_weights:  # random stand-ins (`make rehearse`) claim nothing
    assert cirr["recall_at10"] > 5 * cirr_chance["recall_at10"] and cirr["recall_subset_at1"] > cirr_chance[
        "recall_subset_at1"], ("the CIRR model barely beats chance: check that SPRC_CIRR_MODEL is a trained CIRR "
                               "model (a run's best/), and that its tokenizer is the one it was trained with")

# %% [markdown]
# The last rows summarise the recalls: `mean_r5_rs1` is (R@5 + Rs@1) / 2, the "Avg" the CIRR leaderboard
# and the paper rank by; `arithmetic_mean`, `harmonic_mean` and `geometric_mean` are the three means of
# the seven recalls above them (the harmonic one is pulled down most by the weakest recall).
#
# A `Retriever` (from `sprc_lib.course.explorer`) holds the same index and scores, and ranks each query
# the way the metrics do (same tie rule, reference removed), so the ranks it reports are the ranks
# the recall counts. Here is one query's `img_set` drawn: the reference (blue, removed), the target
# (green), and each member's rank in the whole gallery and within the set.

# %%
retriever = Retriever.for_split(cirr_ctx, "CIRR", DATA)
ranks = [r.target_rank for r in retriever.retrievals(k=K)]
for k in (1, 5, 10, 50):
    assert abs(100 * sum(rank <= k for rank in ranks) / len(ranks) - cirr[f"recall_at{k}"]) < 1e-9
display(img_set_figure(retriever, 1))

# %% [markdown]
# ## 3. FashionIQ val, per category
#
# FashionIQ ([paper](https://arxiv.org/abs/1905.12794)) has no public test labels, so results are
# reported on val, with the protocol of [CLIP4Cir](https://github.com/ABaldrati/CLIP4Cir) that the
# authors' code follows: each category against its own gallery (the category's val images), the
# reference kept in the ranking, the two captions of a triplet joined into one query ("Is red and has
# long sleeves"), and R@10 and R@50 per category, their means, and the average of the two means (the
# figure the authors' code keeps its best model by).
#
# Real FashionIQ galleries hold many near-identical products, so a target competes with its look-alikes
# and even the paper's model misses many targets in its top 50 (notebook 06 has its numbers). The toy
# galleries are built alike on purpose: larger than the set of toy garments, so each garment appears in
# three or four photos (a target has twins that differ only in the photo) among many more look-alikes.
# When each gallery held a quarter as many images, one photo per garment, the tiny model's R@50 sat at
# 100, where no gain can show; in tiny mode the cell below asserts that no recall here reaches 100.

# %%
fiq = validate(fiq_ctx, "FashionIQ", DATA)
fiq_chance = chance("FashionIQ", DATA, course.skip_missing)
rows = [[c, *(f"{fiq[f'{c}_recall_at{k}']:.1f} ({fiq_chance[f'{c}_recall_at{k}']:.1f})" for k in FASHIONIQ_RECALL_KS)]
        for c in ("dress", "shirt", "toptee", "average")]
print(format_table(["category", "R@10 (chance)", "R@50 (chance)"], rows))
print(f"average of R@10 and R@50: {fiq['average']:.1f} (chance {fiq_chance['average']:.1f})")
if MODE == "tiny":
    assert max(fiq.values()) < 100, fiq  # off the ceiling, so a better model can show
if not course.standin_weights:
    assert fiq["average_recall_at10"] > 3 * fiq_chance["average_recall_at10"], (
        "the FashionIQ model barely beats chance: check that SPRC_FIQ_MODEL is a trained FashionIQ model (a run's "
        "best/)")

# %% [markdown]
# ## 4. The CIRR test server: writing and checking the two files
#
# CIRR's test labels are hidden. You upload two JSON files to the
# [CIRR evaluation server](https://cirr.cecs.anu.edu.au/) (the CIRR repository's
# [`Test-split_server.md`](https://github.com/Cuberick-Orion/CIRR/blob/main/Test-split_server.md)
# gives the format): for every test pair id, the top 50 gallery images, and the top 3 of its group,
# each without the reference, plus a `version` and a `metric` entry; each file may be at most 5 MB.
# A rejected upload costs a round trip through the web form, so the library checks everything the
# server would check before it writes anything. On toy data the "test1" split has the real layout.

# %%
recall_file, subset_file = cirr_test_submission(cirr_ctx, DATA, SCRATCH, "sprc")
recall, recall_subset = json.loads(recall_file.read_text()), json.loads(subset_file.read_text())
first_id = next(k for k in recall if k not in ("version", "metric"))
print(recall_file.name, f"{recall_file.stat().st_size:,} bytes;", subset_file.name, f"{subset_file.stat().st_size:,} bytes")
print({k: recall[k] for k in ("version", "metric")}, f"pair {first_id}: {recall[first_id][:4]} ... (50 names)")
print(f"recall_subset pair {first_id}: {recall_subset[first_id]}")
assert max(recall_file.stat().st_size, subset_file.stat().st_size) < 5 * 2**20  # the server's limit

# %% [markdown]
# `validate_cirr_submission` is the check `cirr_test_submission` ran before writing. It passes on
# the files just written, and names the pair id and the problem on a broken copy:

# %%
test_queries, test_gallery = CIRRDataset(DATA, "test1", "relative"), CIRRDataset(DATA, "test1", "classic")
context = dict(pair_ids=[t.pair_id for t in test_queries.triplets], gallery_names=test_gallery.image_names,
               reference_names=[t.reference for t in test_queries.triplets],
               group_members=[list(t.members) for t in test_queries.triplets])
validate_cirr_submission(recall, recall_subset, **context)
print("the files as written: accepted")

first = test_queries.triplets[0]
with_reference = copy.deepcopy(recall)
with_reference[str(first.pair_id)][7] = first.reference  # the reference slipped into its own list
missing_pair = {k: v for k, v in recall_subset.items() if k != str(first.pair_id)}  # a query left out
for what, (r, s) in {"reference in its own list": (with_reference, recall_subset),
                     "a pair id missing": (recall, missing_pair)}.items():
    try:
        validate_cirr_submission(r, s, **context)
        raise AssertionError(f"{what}: the broken copy was accepted")
    except ValueError as error:
        print(f"{what}: rejected: {error}")

# %% [markdown]
# ## 5. Looking at rankings: top-k grids
#
# Numbers say how often; pictures say how. Each row: the reference (blue) and the modification
# text, then the top-k gallery images with their scores; the target, when it is among them, is
# outlined green; when it is not, it is shown at the end of the row with its rank.

# %%
display(retrieval_grid(retriever, retriever.retrievals(K, range(SHOWN_QUERIES)), title="CIRR val: first queries"))

# %% tags=["try"]
# Try it: pick other CIRR val queries (any indices below len(retriever.queries)), or another K, and rerun.
PICKED = [i for i in (10, 11, 12) if i < len(retriever.queries)]  # query numbers
PICKED = PICKED or list(range(min(3, len(retriever.queries))))  # a small val set has fewer
display(retrieval_grid(retriever, retriever.retrievals(K, PICKED), title="CIRR val: the queries you picked"))

# %% [markdown]
# ## 6. Failure cases: the targets ranked worst
#
# The queries whose target ranked lowest in the whole gallery:

# %%
worst = retriever.worst(FAILURES, K)
display(retrieval_grid(retriever, worst, title="CIRR val: the targets ranked worst"))
print([f"{r.query.label}: rank {r.target_rank}" for r in worst])
worst_ranks = [r.target_rank for r in worst]
assert worst_ranks == sorted(worst_ranks, reverse=True) and worst_ranks[0] == max(ranks)

# %% [markdown]
# Before blaming the model, look at what it returned. Three patterns are worth looking for in the
# grid (which of them you find depends on the model and the queries):
#
# - **What the text asked for, on the wrong scene.** Top images that carry the requested change (the
#   new colour, the added object) but share little else with the reference: the text's signal
#   overrode the image's. Composed retrieval must keep what the text does not mention.
# - **Small, local edits.** Recolouring or removing one object among several, or changing a size,
#   touches few pixels; look for top images that are near-copies of the reference without the change.
# - **Several edits in one sentence** ("make it bigger, then paint it yellow"): top images that make
#   one of them. Exercise 2 compares such queries with the others.
#
# On real CIRR add annotation issues: captions that are ambiguous or wrong, and other gallery
# images that fit the text as well as the labelled target (CIRR's `target_soft` marks some). A
# failure grid is where such cases surface; the recall counts them as misses all the same.
#
# ## 7. The explorer: your own queries
#
# `Explorer` holds the state the widget shows, and its methods are the widget's callbacks:
# `choose_query(i)`, `type_text(text)`, `choose_reference(name)`, `set_k(k)`. Called directly they
# return the new top-k, so you can script them; an unknown reference is a clear error. (For
# FashionIQ, `Retriever.for_split(fiq_ctx, "FashionIQ", DATA, category="dress")` builds the same thing over
# one category's gallery, with the reference kept in the ranking.)

# %%
explorer = Explorer(retriever, k=K, query=0)
print("query:", explorer.query.text, "->", explorer.summary())
typed = explorer.type_text("make the circle bigger and paint it yellow")
print("typed:", typed.query.text, "->", explorer.summary())
assert typed.query.reference == retriever.queries[0].reference and typed.query.target == retriever.queries[0].target
try:
    explorer.choose_reference("no-such-image")
except ValueError as error:
    print("unknown reference:", error)

# %% [markdown]
# The widget: pick a query, type your own text (press Enter), pick another reference image, or
# move k. When you change only the text, the query's original target stays outlined (or shown with
# its rank), so you see how your wording moves it. The grid under the controls is an ordinary image
# output, redrawn with every change (also when a later cell calls the explorer): the controls need a
# live kernel, and a copy you save and reopen without one shows the grid as you left it.

# %%
ExplorerWidget(explorer)

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** How much do the CIRR recalls drop if the reference is *not* removed from the
# rankings, and in what share of the queries (`reference_first`, in %) would the reference itself
# come first? (`retriever.all_scores()` gives the score matrix; `sprc_lib.evaluation.metrics.rank_gallery`
# ranks it, with or without an `exclude`.)

# %% jupyter={"source_hidden": true} tags=["solution"]
scores = retriever.all_scores()
column = {name: i for i, name in enumerate(retriever.gallery_names)}
targets = torch.tensor([column[q.target] for q in retriever.queries])
references = torch.tensor([column[q.reference] for q in retriever.queries])
order = rank_gallery(scores)  # nothing removed
kept_rank = (order == targets[:, None]).int().argmax(dim=1) + 1
reference_rank = (order == references[:, None]).int().argmax(dim=1) + 1
reference_first = 100 * (reference_rank == 1).float().mean().item()
above = reference_rank < kept_rank  # the queries whose target the reference pushes down one place
removed_rank = torch.tensor(ranks)  # the ranks the recalls count (section 2)
assert torch.equal(kept_rank, removed_rank + above.int())  # keeping it moves a target by that one place only
for k in (1, 5, 10):
    print(f"R@{k}: {100 * (kept_rank <= k).float().mean():.1f} with the reference kept, "
          f"{cirr[f'recall_at{k}']:.1f} with it removed")
print(f"the reference comes first in {reference_first:.1f}% of the queries and above its target in "
      f"{100 * above.float().mean():.1f}%; R@1 loses exactly the queries whose target was first and the "
      f"reference above it ({100 * (above & (removed_rank == 1)).float().mean():.1f}%)")

# %% tags=["check"]
check(lambda: abs(reference_first - answers.reference_first(retriever)) < 1e-3,
      "rank the gallery with nothing excluded and count, in %, the queries whose first image is their reference")

# %% [markdown]
# **Exercise 2.** Is the model worse on some kinds of edit? Split the CIRR val queries by a keyword
# of their text (colour words, size words, removals, several edits joined by "then"/"and"), matching
# whole words only (a word: a run of letters, so "smaller," counts as "smaller"), and compare R@10 per group: `recall_by_kind` maps each kind to its R@10 (the size
# words under `"size"`: bigger, smaller, larger, size), and `weakest` names the kind with the lowest.

# %% tags=["solution"] jupyter={"source_hidden": true}
kinds = {
    "colour": ("red", "blue", "green", "yellow", "pink", "orange", "violet", "purple", "color", "colour", "paint"),
    "size": ("bigger", "smaller", "larger", "size"),
    "removal": ("remove", "rid", "delete", "without"),
    "several edits": ("then", "and", "also"),
}
results = retriever.retrievals(k=K)
recall_by_kind, counts = {}, {}
for kind, words in kinds.items():  # whole words only: "rid" must not match "grid", nor "red" "colored"
    picked = [r for r in results if set(re.findall(r"[a-z]+", r.query.text.lower())) & set(words)]
    if picked:
        counts[kind] = len(picked)
        recall_by_kind[kind] = 100 * sum(r.target_rank <= 10 for r in picked) / len(picked)
table = [[kind, str(counts[kind]), f"{recall_by_kind[kind]:.1f}"] for kind in recall_by_kind]
print(format_table(["edit kind", "queries", "R@10"], [*table, ["all", str(len(results)), f"{cirr['recall_at10']:.1f}"]]))
weakest = min(recall_by_kind, key=recall_by_kind.get)
print(f"weakest kind: {weakest}, R@10 {recall_by_kind[weakest]:.1f} against {cirr['recall_at10']:.1f} over all "
      f"queries, on {counts[weakest]} queries (one query there is worth {100 / counts[weakest]:.1f} points)")

# %% tags=["check"]
SIZE_WORDS = {"bigger", "smaller", "larger", "size"}
check(lambda: len(recall_by_kind) >= 2 and recall_by_kind[weakest] == min(recall_by_kind.values())
      and abs(recall_by_kind["size"] - answers.recall_of_kind(retriever, K, SIZE_WORDS)) < 1e-9,
      "recall_by_kind maps each kind to the percentage of its queries (matched by whole words) whose target_rank "
      "is at most 10; weakest is the kind with the lowest")

# %% [markdown]
# **Exercise 3.** Give the text of query 0 to a different reference image. Does the top-k follow the
# text or the image? Count the images the two top-k share (`shared`). (Make an `Explorer` of your own,
# so that section 7's widget keeps showing its query, then call its `choose_query`, then its
# `choose_reference`.)

# %% jupyter={"source_hidden": true} tags=["solution"]
mine = Explorer(retriever, k=K)  # section 7's widget follows `explorer`: this one leaves it as section 7 left it
original = mine.choose_query(0)
other = retriever.queries[5].reference
moved = mine.choose_reference(other)
display(retrieval_grid(retriever, [original, moved]))
shared = len(set(original.names) & set(moved.names))
print(f"the two top-{K} share {shared} image(s): the top-k "
      f"{'follows the image' if shared <= K // 2 else 'follows the text'} here. A model that followed only the "
      "text would return the same images for both; composed retrieval edits the reference, it does not replace it.")

# %% tags=["check"]
check(lambda: original.query.text == moved.query.text and original.query.reference != moved.query.reference
      and shared == answers.shared_names(original, moved),
      "keep query 0's text, change only the reference, and count the names the two top-k have in common")

# %%
SCRATCH_DIR.cleanup()  # this notebook's temporary folders go (stopping the kernel does it too)

# %% [markdown]
# ## Questions
#
# **Question 1.** Recall_subset@1 has a chance level of 20 % on CIRR, Recall@1 well under 1 %. Why,
# and what does the subset metric tell you that Recall@K does not?

# %% [markdown] jupyter={"source_hidden": true} tags=["answer"]
# **Answer.** The subset ranking holds only the query's group without its reference: five images,
# so a random ranking puts the target first one time in five. Recall@1 ranks the whole gallery minus
# the reference, hundreds to thousands of images. CIRR builds each group from visually similar images,
# so the subset metric asks whether the model makes the fine distinction the text describes among
# near-duplicates, and it is less affected by other gallery images that fit the text as well as the
# labelled target (false negatives).
#
# *Marking (2 points):* 1 for: the subset ranks 5 images (chance 1/5), R@1 the whole gallery; 1 for: the subset
# tests the fine distinction the text makes among look-alikes, and suffers less from false negatives.

# %% [markdown]
# **Question 2.** Section 2 printed an R@50 for the toy CIRR val. Would the same R@50 on real CIRR
# val mean the same? What would you compare two models by instead?

# %% [markdown] jupyter={"source_hidden": true} tags=["answer"]
# **Answer.** No: a recall depends on the gallery. Chance R@K is K out of the images ranked, so on
# the toy gallery of 360 images a random ranking already reaches R@50 = 50/359, about 14 %; on the
# real val gallery of 2,297 it is 50/2,296, about 2 %. Compare models on the same split with the same
# protocol, each figure beside its chance level; for the paper's numbers, the CIRR test server's
# figures (notebook 06).
#
# *Marking (2 points):* 1 for: no, chance R@50 is 50/359 (about 14%) on the toy gallery and 50/2,296 (about 2%)
# on real val; 1 for: compare models on the same split and protocol, beside chance (the paper: the test server).
# Accept chance figures within 1 point.

# %% [markdown]
# ## Key takeaways
#
# - R@K counts queries whose target is in the top K; CIRR removes the reference from each ranking
#   and adds Recall_subset@K within the query's six-image group; FashionIQ ranks per category, keeps
#   the reference, and reports R@10 and R@50.
# - Always read a figure beside its chance level: on a toy gallery of a few hundred images a random
#   ranking already reaches R@50 of about 14 %, on a real one of thousands about 2 %.
# - The CIRR test server takes two files (top 50, top 3 of the group); the library validates them
#   before writing, and names the pair id and the problem when something is wrong.
# - Grids, failure cases and the explorer show *how* the model ranks: what it keeps from the image,
#   what it takes from the text, and where the two disagree.
#
# ## Further reading
#
# - [CIRR](https://github.com/Cuberick-Orion/CIRR) and its [paper](https://arxiv.org/abs/2108.04024):
#   the dataset, the reference-removed protocol and Recall_subset@K.
# - [CIRR evaluation server](https://cirr.cecs.anu.edu.au/) and its
#   [instructions](https://github.com/Cuberick-Orion/CIRR/blob/main/Test-split_server.md): where the
#   test figures come from, and the file format section 4 writes.
# - [FashionIQ](https://github.com/XiaoxiaoGuo/fashion-iq) and its [paper](https://arxiv.org/abs/1905.12794):
#   the three categories and their relative captions.
# - [CLIP4Cir](https://github.com/ABaldrati/CLIP4Cir): the validation code the authors' code follows
#   (caption joining, per-category FashionIQ galleries).
# - [SPRC paper](https://arxiv.org/abs/2310.05473): the tables that notebook 06 compares with.
#
# **Next:** notebook 06 loads the authors' released checkpoints and reproduces the paper's numbers.
