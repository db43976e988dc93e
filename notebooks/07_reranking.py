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
# # 07 · Re-ranking (SPRC²): a second stage that reads each candidate with the query
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sprc-course/sprc-course/blob/main/notebooks/07_reranking.ipynb)
#
# The [SPRC paper](https://arxiv.org/abs/2310.05473) also reports a two-stage variant, SPRC², that
# re-orders SPRC's best candidates with a second model. The
# [authors' repository](https://github.com/chunmeifeng/SPRC) lists its code and weights as still to
# come and holds an unfinished model class (`blip2_cir_rerank`). This course builds it from that class:
# a **cross-encoder** on BLIP-2's Q-Former that reads the reference image, the candidate image and the
# caption together, trained with hard negatives, and run on each query's top K.
#
# Tiny mode (the default) uses the tiny SPRC and a tiny re-ranker trained on the toy data (shipped with
# the course). Full mode uses the SPRC model `SPRC_CIRR_MODEL` names and the re-ranker
# `SPRC_CIRR_RERANKER` names (a `train-reranker` run, section 7).
#
# **Recap of notebook 06**, from memory before you start (its key takeaways hold the answers):
# 1. What is inside an authors' released checkpoint file, and how does the library turn it into a model folder?
# 2. Which of your numbers can be compared with the paper's, and in which mode?
# 3. Why do CIRR test numbers come from the server, and FashionIQ's from the validation split?
#
# ## What you will learn
#
# - why retrieval comes in two stages, measured: a dot product per gallery image against a Q-Former
#   pass per candidate;
# - what the re-ranker reads (its token layout) and what it cannot tell apart;
# - how its training picks hard negatives, shown on one batch;
# - the ceiling: re-ranking the top K can only promote what stage 1 already put there;
# - how the cost and the benefit grow with K, and what fusing the two stages' scores changes;
# - the commands that train, evaluate and submit SPRC².

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
import math

import torch

from sprc_lib import CIRRDataset, collate, format_table, tokenize
from sprc_lib.course import answers, course_mode, retrieval_grid, setup
from sprc_lib.course import figures as viz
from sprc_lib.course import rerank_tour as tour
from sprc_lib.course.exercises import check
from sprc_lib.data.transforms import build_transform
from sprc_lib.evaluation.rerank import Reranker, default_fuse, default_top_k
from sprc_lib.model.rerank import hard_negatives, negative_weights

# %% tags=["parameters"]
MODE = course_mode()  # "tiny" (CPU, toy data) or "full" (GPU, real data): set SPRC_MODE=full or edit this
SEED = 0
KS = (1, 2, 5, 10, 20) if MODE == "tiny" else (1, 5, 10, 50, 100, 200)  # top-K lengths compared (4, 5)
QUERIES = None if MODE == "tiny" else 200  # CIRR val queries scored by both stages (None: all; toy val has 300)
TIMED = 20  # queries timed at each K
BATCH = 8  # training triplets in the hard-negative example of section 3
SHOWN = 3  # rows in each before/after grid

# %%
course = setup(MODE)  # the data, cache and device of this mode
root = course.need_data("CIRR")
stage1 = course.context(*course.trained("CIRR"))  # stage 1: SPRC
reranker_model, tokenizer = course.trained_reranker("CIRR", beside=stage1.model)  # stage 2: the re-ranker
k, alpha = default_top_k("CIRR", course.preset), default_fuse(course.preset)  # the defaults (section 5)
reranker = Reranker(course.context(reranker_model, tokenizer), max(*KS, k), alpha)
model = reranker.ctx.model
Q, L = model.config.num_query_tokens, model.config.max_txt_len
T = model.vision_model.embeddings.position_embedding.shape[1]  # image tokens per image

# %% [markdown]
# ## 1. Why two stages
#
# Stage 1 (SPRC) turns a query into **one vector** and every gallery image into Q vectors, computed once
# for the whole gallery; scoring an image is a dot product and a max. A **cross-encoder** instead runs the
# Q-Former on the query *and* the candidate together, so nothing can be computed ahead: each candidate
# costs a pass. That is affordable for a few candidates per query, not for the gallery. So stage 1 ranks
# everything and stage 2 re-reads only the top K. The cell scores both stages on CIRR val (stage 2 on
# each query's top `max(KS)`; in full mode on the first QUERIES queries), then times one query each way.

# %%
torch.manual_seed(SEED)
two = tour.two_stages(stage1, reranker, root, reranker.top_k, course.bounded_queries(QUERIES))
k = min(k, two.candidates.shape[1])  # a gallery smaller than the default K (a stand-in's) is re-ranked whole
stage1_seconds, rerank_seconds = tour.seconds_per_query(two, KS, TIMED)
rows = [["stage 1: compose the query, score the whole gallery", f"{len(two.retriever.gallery_names):,} images",
         f"{stage1_seconds * 1000:.2f}", "1"]]
rows += [[f"stage 2: re-rank the top {k}", f"{k} passes", f"{s * 1000:.2f}", f"{s / stage1_seconds:.1f}"]
         for k, s in rerank_seconds.items()]
print(f"{len(two.queries)} CIRR val queries; time per query, measured on {min(TIMED, len(two.queries))} of them:")
print(format_table(["what", "work", "ms per query", "x stage 1"], rows))
assert rerank_seconds[max(KS)] > stage1_seconds  # a pass per candidate costs more than the whole first stage

# %% [markdown]
# Stage 1 scores the whole gallery with one matrix product against features computed once; stage 2
# pays one Q-Former pass per candidate, so its cost grows with K. That is why the authors re-rank
# CIRR's top 200 and FashionIQ's top 40, never the gallery.
#
# ## 2. What the re-ranker reads
#
# The re-ranker is BLIP-2's image-text matching (ITM) pass with two images. The Q-Former's sequence is
# [Q query tokens | the caption's L tokens]; in cross-attention the query tokens read the reference
# image's T tokens and the candidate's T tokens, **side by side** (2T keys). The ITM head,
# `Linear(H, 2)`, scores each query token's output; the Q scores are averaged, and the probability of
# class 1 ("match") is the candidate's score.

# %%
viz.token_layouts(
    {"Q-Former sequence": [("queries", Q), ("caption", L)],
     "cross-attention keys": [("reference image", T), ("candidate image", T)]},
    {"Q-Former sequence": "ITM head on each query output, averaged: P(match)",
     "cross-attention keys": "no marker says which image a token came from"},
    title="the re-ranker's inputs: one (query, candidate) pair per pass")

# %% [markdown]
# Nothing in the keys marks which image a token came from, and attention does not see the order of its
# keys. So, in the course's reading of the authors' design, the score cannot depend on which image is the
# reference: swapping the two gives the same score, up to rounding. The cell checks it on a few pairs of
# the candidates above.

# %%
refs = two.index.embeds_of(two.references[:4])
cands = two.index.embeds[two.candidates[:4, 0]]
ids, mask = (t.to(course.device) for t in tokenize(tokenizer, two.captions[:4], L))
with torch.no_grad():
    forward, swapped = model.match_scores(refs, cands, ids, mask), model.match_scores(cands, refs, ids, mask)
print("P(match), reference then candidate:", [f"{p:.4f}" for p in forward.tolist()])
print("P(match), the two images swapped:  ", [f"{p:.4f}" for p in swapped.tolist()])
assert torch.allclose(forward, swapped, atol=1e-5)

# %% [markdown]
# What the caption asks for decides the match; which image is the "before" cannot. A caption such as "make
# the circle bigger" gets the same score for a candidate with a smaller circle, if the rest of the two
# images agrees.
#
# ## 3. Hard negatives, on one batch
#
# Training shows the re-ranker 3B examples per batch of B triplets: each triplet as it is (label 1), with
# another **target** (label 0), and another **query** (its reference and caption) before the true target
# (label 0). The wrong ones are drawn where they are hard: a frozen copy of the starting Q-Former (the
# *miner*) scores each caption against each target, s[i, j] = max over query tokens / temp, and a
# negative target for query i is drawn from softmax(s[i, :]) with the positive at weight 0 (a negative
# query for target j from softmax(s[:, j])). The cell shows the weights on BATCH training triplets.

# %%
train_set = CIRRDataset(root, "train", "relative",
                        preprocess=build_transform("targetpad", model.config.vision_config.image_size))
batch = collate([train_set[i] for i in range(BATCH)])
ids, mask = (t.to(course.device) for t in tokenize(tokenizer, batch["caption"], L))
with torch.no_grad():
    targets = model.encode_image(batch["target"].to(course.device))
    s = model.mining_scores(targets, ids, mask)
for_queries, for_targets = negative_weights(s)
negative_target, negative_query = hard_negatives(s, torch.Generator(device=s.device).manual_seed(SEED))
viz.similarity_heatmap(for_queries.cpu(), batch["caption"], title="P(target j is drawn as query i's negative)",
                       xlabel="target j (the diagonal, each query's own target, has weight 0)",
                       bar_label="probability")

# %%
rows = [[str(i), batch["caption"][i][:40], str(int(negative_target[i])), f"{for_queries[i].max():.2f}",
         str(int(negative_query[i]))] for i in range(BATCH)]
print(format_table(["triplet", "caption", "negative target", "largest weight", "negative query"], rows))
assert (negative_target != torch.arange(BATCH, device=s.device)).all()  # never the positive
assert (negative_query != torch.arange(BATCH, device=s.device)).all()

# %% [markdown]
# ## 4. The ceiling: re-ranking can only promote what stage 1 found
#
# Re-ranking permutes each query's top K and leaves the rest of the ranking alone. So the target can come
# first only if stage 1 ranked it in the top K: **stage 1's R@K is the ceiling of R@1 after re-ranking
# the top K**. A larger K raises the ceiling, and gives the re-ranker more wrong candidates to sort out.

# %%
stage1_ranks = two.target_ranks(two.stage1)
ceiling = tour.recall_curve(stage1_ranks, KS)
reranked = [tour.recall_curve(two.target_ranks(two.reranked(k)), [1])[0] for k in KS]
baseline = ceiling[0]
tour.ceiling_figure(KS, ceiling, reranked, baseline)

# %%
print(format_table(["K", "ceiling: stage-1 R@K", "R@1 after re-ranking the top K"],
                   [[str(k), f"{c:.1f}", f"{r:.1f}"] for k, c, r in zip(KS, ceiling, reranked, strict=True)]))
assert all(r <= c + 1e-9 for r, c in zip(reranked, ceiling, strict=True))  # never above the ceiling
assert reranked[0] == baseline  # re-ranking a top 1 changes nothing

# %% [markdown]
# ## 5. Cost and benefit over K
#
# The price grows with K (section 1); the benefit is the change in R@1. Beyond the authors, the library
# can also **fuse** the two stages inside the top K: order by ALPHA x stage 1 (rescaled to [0, 1] over
# the query's top K) + (1 - ALPHA) x the re-ranker's probability (`--rerank-fuse ALPHA`; 0 is the authors' pure
# re-ranking). A weak re-ranker that is right where stage 1 hesitates helps most this way.

# %%
gains = [r - baseline for r in reranked]
tour.cost_figure(KS, [rerank_seconds[k] for k in KS], stage1_seconds, gains)

# %% [markdown]
# What `two.reranked(k, alpha)` computes, written out query by query: stage 1's best k images (its
# reference left out, as the metrics leave it out), their stage-1 scores rescaled to [0, 1] over those
# k (1 for the first, 0 for the k-th), mixed with the re-ranker's probabilities by the fusion weight, and the k candidates lifted
# above every other image in that order. Every other image keeps its stage-1 score, so the ranking
# beyond the top k does not change.

# %%
column = {name: c for c, name in enumerate(two.retriever.gallery_names)}
by_hand = two.stage1.clone()
for i, query in enumerate(two.queries):
    row = two.stage1[i].clone()
    row[column[query.reference]] = float("-inf")  # never a candidate
    top = torch.sort(row, descending=True, stable=True).indices[:k]  # stage 1's best k, best first
    assert torch.equal(top, two.candidates[i, :k].to(top.device))  # the order stage2's columns follow
    s1 = two.stage1[i, top]
    scaled = (s1 - s1.min()) / (s1.max() - s1.min()).clamp_min(1e-12)  # 0 for the k-th, 1 for the first
    p_match = two.stage2[i, :k].to(s1.dtype)  # the re-ranker's P(match) of each candidate
    key = p_match if alpha == 0 else alpha * scaled + (1 - alpha) * p_match  # the order inside the top k
    by_hand[i, top] = two.stage1[i].max() + 1.0 + key  # above every image outside the top k
library = two.reranked(k, alpha)
print(f"top {k}, fusion weight {alpha:g}: the hand-written scores equal the library's for all "
      f"{len(two.queries)} queries: {torch.equal(by_hand, library)}")
assert torch.equal(by_hand, library)

# %%
runs = {"SPRC (stage 1)": two.metrics(two.stage1), f"SPRC², top {k}, pure": two.metrics(two.reranked(k)),
        f"SPRC², top {k}, fused {alpha:g}": two.metrics(two.reranked(k, alpha))}
keys = ["recall_at1", "recall_at5", "recall_at10", "recall_subset_at1"]
print(format_table(["ranking", *keys], [[name, *(f"{m[key]:.1f}" for key in keys)] for name, m in runs.items()]))
sprc, fused = runs["SPRC (stage 1)"], runs[f"SPRC², top {k}, fused {alpha:g}"]
if MODE == "tiny" and course.max_steps is None:  # the tiny track's claim (README, make course)
    assert fused["recall_at1"] > sprc["recall_at1"] and fused["recall_subset_at1"] > sprc["recall_subset_at1"]

# %% tags=["try"]
# Try it: another top K (at most max(KS)) or fusion weight (0 to 1), and rerun: which one helps R@1 most?
K_TRY, ALPHA_TRY = 10, 0.25
mine = two.metrics(two.reranked(K_TRY, ALPHA_TRY))
print(f"top {K_TRY}, fused {ALPHA_TRY:g}: " + ", ".join(f"{key} {mine[key]:.1f}" for key in keys))

# %% [markdown]
# In tiny mode the last row is what `make course` prints for toy CIRR: with the course's default for the
# tiny models (its top K and fusion weight) the tiny re-ranker adds to SPRC on R@1 and Rs@1 (the cell
# asserts it). The "pure" row is the authors' way; compare its Rs@1 with SPRC's, and think of section 2:
# an img_set's members are near copies of one another, which a score symmetric in the two images
# separates least well.
#
# ## 6. Before and after
#
# The queries whose target moved up the most under the course's default, and those it moved down:
# stage 1's top five above, the re-ranked top five below.

# %%
after = two.reranked(k, alpha)
before_ranks, after_ranks = stage1_ranks, two.target_ranks(after)
moved = (before_ranks - after_ranks).tolist()
up = sorted(range(len(moved)), key=lambda i: -moved[i])[:SHOWN]
down = sorted(range(len(moved)), key=lambda i: moved[i])[:SHOWN]
print(f"targets moved up: {sum(m > 0 for m in moved)}, down: {sum(m < 0 for m in moved)}, "
      f"unchanged: {sum(m == 0 for m in moved)} of {len(moved)}")
results = [row for i in up for row in two.before_after(i, k, alpha)]
retrieval_grid(two.retriever, results, title=f"moved up: stage 1's scores (odd rows), then re-ranked with the fused "
               f"keys (even rows; ALPHA {alpha:g})")

# %%
results = [row for i in down for row in two.before_after(i, k, alpha)]
retrieval_grid(two.retriever, results, title="moved down: stage 1 (odd rows), then re-ranked (even rows)")

# %% [markdown]
# ## 7. The commands
#
# Training the re-ranker is `train` with another model and loss, and takes every flag `train` takes for
# the run folder, resume, the feature cache, precision and torchrun (the miner's frozen copy is part of
# the checkpoint). Its validation re-orders the top K of the SPRC model `--stage1-model` names:
#
# ```bash
# python -m sprc_lib train-reranker --dataset CIRR --data-path data --stage1-model runs/cirr/best \
#     --feature-cache /content/cache --save-training --save-best
# python -m sprc_lib train --resume runs/CIRR_blip2-vitg_<time>    # a stopped run goes on
# ```
#
# `validate` and `cirr-submission` take the re-ranker beside the SPRC model and print both stages:
#
# ```bash
# python -m sprc_lib validate --dataset CIRR --model-path runs/cirr/best \
#     --rerank-model runs/cirr-reranker/best --rerank-top-k 200 [--rerank-fuse 0.5]
# python -m sprc_lib cirr-submission --model-path runs/cirr/best --rerank-model runs/cirr-reranker/best
# ```
#
# `python -m sprc_lib bench` prints the cost of re-ranking 10, 50 and 200 candidates beside one stage-1
# query.
#
# ## Exercises
#
# **Exercise 1.** Sweep the fusion weight: for ALPHA in 0, 0.25, 0.5, 0.75 and 1, compute R@1 (percent)
# after re-ranking the top `k` with `two.reranked(k, alpha)` and `two.metrics(...)`, into a list `r1`.
# Which weight is best here, and what does ALPHA = 1 give?

# %% tags=["solution"] jupyter={"source_hidden": true}
alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
r1 = [two.metrics(two.reranked(k, a))["recall_at1"] for a in alphas]
print(format_table(["ALPHA", "R@1"], [[f"{a:g}", f"{r:.1f}"] for a, r in zip(alphas, r1, strict=True)]))
print(f"best here: ALPHA = {alphas[r1.index(max(r1))]}; ALPHA = 1 keeps stage 1's order: R@1 {r1[-1]:.1f}, "
      f"stage 1's {sprc['recall_at1']:.1f}")

# %% tags=["check"]
check(lambda: len(r1) == 5 and all(math.isclose(mine, key, abs_tol=1e-6) for mine, key in zip(
    r1, answers.fusion_sweep(two, k, [0.0, 0.25, 0.5, 0.75, 1.0]), strict=True)), "one R@1 per ALPHA of 0, 0.25, 0.5, 0.75 and 1, in that order: the top k re-ordered "
      "with that fusion weight (section 5), then scored as stage 1's metrics are")

# %% [markdown]
# **Exercise 2.** Are the mined negatives hard? On the batch of section 3, compare the miner's mean score
# `s[i, j]` of the drawn negative targets (`negative_target`) with the mean over all other targets
# (every j != i). Keep the two means in `drawn` and `others`.

# %% tags=["solution"] jupyter={"source_hidden": true}
rows_ = torch.arange(BATCH, device=s.device)
drawn = s[rows_, negative_target].mean().item()
off_diagonal = ~torch.eye(BATCH, dtype=torch.bool, device=s.device)
others = s[off_diagonal].mean().item()
print(f"mean miner score of the drawn negatives {drawn:.3f}, of all other targets {others:.3f}")

# %% tags=["check"]
check(lambda: all(math.isclose(mine, key, rel_tol=1e-5) for mine, key in zip((drawn, others), answers.negative_scores(
          s, negative_target), strict=True)),
      "s holds the miner's score of each query (row) against each target (column): drawn averages one entry per "
      "row, the column negative_target names; others averages every entry off the diagonal (a query's own target)")

# %% [markdown]
# **Exercise 3.** How long must the top K be for stage 1 to have the target in it for 90 % of the
# queries? Find the smallest K (1 to the gallery's size) with stage-1 R@K >= 90 into `k90`, using
# `tour.recall_curve(stage1_ranks, ...)`.

# %% tags=["solution"] jupyter={"source_hidden": true}
all_ks = list(range(1, len(two.retriever.gallery_names) + 1))
curve = tour.recall_curve(stage1_ranks, all_ks)
k90 = next(kk for kk, r in zip(all_ks, curve, strict=True) if r >= 90)
print(f"stage 1 has the target in its top {k90} for 90 % of the queries; stage 2 scores its top "
      f"{two.candidates.shape[1]}")

# %% tags=["check"]
check(lambda: k90 == answers.first_k_reaching(stage1_ranks, 90, len(two.retriever.gallery_names)),
      "walk K up from 1 over the gallery's size: k90 is the first K whose stage-1 Recall@K (recall_curve) reaches 90")

# %% [markdown]
# ## Questions
#
# **Question 1.** Why not train a cross-encoder alone and skip stage 1?

# %% [markdown] jupyter={"source_hidden": true} tags=["answer"]
# **Answer.** Scoring the gallery with it would cost one Q-Former pass per image per query (section 1
# measures the price of K of them). Stage 1's gallery features are computed once and shared by every
# query, so it can rank millions of images; the cross-encoder only sees what stage 1 keeps. Its quality
# is also bounded by stage 1 (section 4): the two stages are a budget split, not rivals.
#
# *Marking (2 points):* 1 for cost: one pass per gallery image per query, while stage 1 computes gallery
# features once for all queries; 1 for: the two stages split a budget, the re-ranker bounded by what stage 1
# keeps.

# %% [markdown]
# **Question 2.** The miner is a frozen copy of the starting Q-Former, not the model being trained. What
# would change if the negatives came from the re-ranker itself?

# %% [markdown] jupyter={"source_hidden": true} tags=["answer"]
# **Answer.** The negatives would follow the model: as it learns, what it finds hard changes, so the
# training examples would shift under it (hard-negative mining that tracks the model, as ALBEF's does
# with its own similarities). With a frozen miner the distribution of examples is fixed for the whole
# run, which makes training steadier and its checkpoints comparable, but the negatives stay those the
# starting model found hard, not those the re-ranker still gets wrong.
#
# *Marking (2 points):* 1 for: the negatives would follow the model, shifting as it learns (as ALBEF mines with
# its own similarities); 1 for the trade-off: a frozen miner keeps the examples fixed and training steadier, but
# its negatives stay those the start model found hard.

# %% [markdown]
# ## Key takeaways
#
# - SPRC² re-orders SPRC's top K with a cross-encoder: BLIP-2's ITM pass with the reference's and the
#   candidate's tokens as keys, scored by the probability of "match".
# - It costs a Q-Former pass per candidate, so it only sees the top K, and stage 1's R@K is the ceiling of
#   its R@1.
# - It trains on 3B examples per batch of B triplets, with a hard-negative target and a hard-negative
#   query drawn by a frozen copy of the starting model.
# - The two images are one set of keys: the score is symmetric in them (the course's reading).
# - Fusing stage 1's scores into the order (`--rerank-fuse`) is the course's addition; 0 is the authors'.
#
# ## Further reading
#
# - [SPRC paper](https://arxiv.org/abs/2310.05473) and [the authors' code](https://github.com/chunmeifeng/SPRC):
#   `src/lavis/models/blip2_models/blip2_qformer_cir_rerank.py`, the class this notebook's model follows.
# - [BLIP-2](https://arxiv.org/abs/2301.12597): the image-text matching head and its hard negatives.
# - [ALBEF](https://arxiv.org/abs/2107.07651): hard negatives drawn from in-batch similarities.
# - [CIRR](https://github.com/Cuberick-Orion/CIRR): the protocol whose R@K and Rs@K the tables report.
#
# **Next:** this is the last notebook. Train a re-ranker at full scale (section 7's commands, on the model
# of notebook 04), and compare both stages in notebook 06's table.
