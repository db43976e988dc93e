# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,jupyter,-all
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Sentence-level prompts: SPRC pass by pass
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sprc-course/sprc-course/blob/main/notebooks/03_sentence_level_prompts.ipynb)
#
# A composed query is a reference image plus a modification text. The obvious way to turn it into one
# vector is to encode both separately and add them up (*late fusion*). SPRC does something else: it lets
# BLIP-2's Q-Former read the image **and** the text together and turn them into Q vectors, a
# **sentence-level prompt**; then it reads the text once more with that prompt in front of it, and the
# result is the query. This notebook runs each of these passes by itself, computes SPRC's three losses
# by hand, checks them against the model, compares SPRC with late fusion on the same weights, and trains
# for a few steps to watch the losses fall.
#
# ## What you will learn
#
# - the fusion pass (queries + caption + reference image → prompt P) and the text pass (P + caption →
#   composed feature f), with shapes;
# - the image-text contrastive loss (ITC) on f and the target's features, by hand and by the model;
# - the second branch (a learned, image-free prompt → `loss_rtc`) and the alignment loss, and where the
#   authors' code differs from the paper;
# - why composing *inside* the Q-Former beats adding features afterwards;
# - what a few training steps do to the three losses.

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
import tempfile

import torch
import torch.nn.functional as F

from sprc_lib import (
    CIRRDataset,
    TrainConfig,
    build_transform,
    chance,
    cirr_metrics,
    collate,
    format_table,
    index_features,
    load_model,
    load_tokenizer,
    recipe_for,
    relative_queries,
    tokenize,
    train,
)
from sprc_lib.course import course_mode, setup
from sprc_lib.course import figures as viz

# %% tags=["parameters"]
MODE = course_mode()  # "tiny": toy CIRR and the tiny model; "full": real CIRR and BLIP-2 ViT-g (a GPU)
SEED = 0
BATCH = 8  # triplets in the pass-by-pass walk-through
TRAIN_STEPS = 30  # optimiser steps of the short training in section 7
TRAIN_BATCH = 16 if MODE == "tiny" else 32  # triplets per training step there (lower it if a GPU runs out of memory)

# %%
course = setup(MODE)  # the data, cache, model sizes, weights and device of this mode

# %% [markdown]
# ## 1. The map
#
# One figure for the whole notebook. Three Q-Former passes feed three losses; each box is one method
# of `SPRCModel`, and the sections below run them in this order.

# %%
viz.sprc_diagram()

# %% [markdown]
# In tiny mode we use the tiny SPRC trained on toy CIRR (trained on first use and then reused); in full
# mode the trained SPRC that `SPRC_CIRR_MODEL` names (a run of notebook 04, or the authors' model
# converted in notebook 06), else BLIP-2's weights with fresh prompt tokens (the passes run the same,
# but the composed features are untrained).

# %%
torch.manual_seed(SEED)
device, root = course.device, course.need_data("CIRR")
trained = course.has_trained("CIRR")
model, tokenizer = course.trained("CIRR") if trained else (load_model(course.weights), load_tokenizer(course.weights))
model = model.to(device).eval()
Q, L = model.config.num_query_tokens, model.config.max_txt_len
transform = build_transform("targetpad", model.config.vision_config.image_size)
train_set = CIRRDataset(root, "train", "relative", preprocess=transform)
batch = collate([train_set[i] for i in range(BATCH)])
reference, target = batch["reference"].to(device), batch["target"].to(device)
ids, mask = (t.to(device) for t in tokenize(tokenizer, batch["caption"], L))
print(f"{BATCH} triplets: reference {tuple(reference.shape)}, target {tuple(target.shape)}, caption ids {tuple(ids.shape)}")

# %% [markdown]
# ## 2. The fusion pass: the sentence-level prompt
#
# The reference image goes through the frozen ViT and `ln_vision` (notebook 02). Then the Q-Former runs
# on the sequence **[Q learned queries | the caption's L tokens]**, with the image as cross-attention
# input. In self-attention the queries see the caption and the caption sees the queries; in
# cross-attention the queries read the image. The queries' outputs are the **prompt P**: Q vectors that
# describe "this image, with what the sentence says about it". The caption's outputs are discarded.
#
# The attention mask is `ones(Q)` (queries are always visible) followed by the caption's padding mask.

# %%
with torch.no_grad():
    E_r = model.encode_image(reference)  # (B, T, Dv)
    P = model.fusion_pass(E_r, ids, mask)  # (B, Q, H)

# %% [markdown]
# ## 3. The text pass: the composed query feature
#
# Now the Q-Former runs **without the image** on **[P | the caption]**. SPRC routes every position of this
# pass, the prompt included, through the *text* FFN and skips cross-attention (`query_length=0`): P is
# treated as if it were text, a prompt written in the model's own embedding space. The output at the
# caption's [CLS] token, right after the Q prompt positions, is projected and normalised: the **composed
# feature f**.

# %%
with torch.no_grad():
    f = model.text_pass(P, ids, mask)  # (B, D)
    assert torch.allclose(f, model.composed_features(E_r, ids, mask), atol=1e-5)  # the two passes = the query
viz.token_layouts(
    {"fusion pass": [("queries", Q), ("caption", L)], "text pass": [("prompt P", Q), ("caption", L)],
     "RTC pass": [("[CLS]", 1), ("prompt_tokens", Q), ("caption", L - 1)]},
    {"fusion pass": "+ cross-attention to the reference; P = outputs at the query positions",
     "text pass": f"no image; f = output at position {Q} ([CLS])",
     "RTC pass": "no image; h = output at position 0 ([CLS])"},
    title="what the Q-Former reads in each pass (RTC: section 5)")

# %% [markdown]
# ## 4. Target features and the ITC loss, by hand
#
# The target image is encoded exactly like a BLIP-2 gallery image: queries cross-attend to it, giving
# Q normalised vectors g. The score of query i against target j is BLIP-2's max over query tokens,
# divided by a learned temperature; the loss asks each query to pick its own target among the batch's
# targets (cross-entropy with the diagonal as labels).

# %%
with torch.no_grad():
    g = model.image_features(model.encode_image(target))  # (B, Q, D)
    s = model.scores(f, g) / model.temp  # (B, B): s[i, j] = max_q <f_i, g_j,q> / temp
    labels = torch.arange(BATCH, device=device)
    loss_itc = F.cross_entropy(s, labels)
    losses = model(reference, target, ids, mask)  # the model's forward: all three losses
print(format_table(["tensor", "shape", "meaning"], [
    ["E_r", str(tuple(E_r.shape)), "reference image tokens after ln_vision (B, T, Dv)"],
    ["P", str(tuple(P.shape)), "sentence-level prompt (B, Q, H)"],
    ["f", str(tuple(f.shape)), "composed query feature (B, D)"],
    ["g", str(tuple(g.shape)), "target features, one per query token (B, Q, D)"],
    ["s", str(tuple(s.shape)), "query x target scores / temp (B, B)"],
]))
print(f"loss_itc by hand {loss_itc.item():.4f}, model {losses['loss_itc'].item():.4f}, chance level ln(B) = "
      f"{torch.log(torch.tensor(float(BATCH))).item():.4f}")
assert P.shape == (BATCH, Q, model.config.qformer_config.hidden_size) and f.shape == (BATCH, model.config.image_text_hidden_size)
assert torch.allclose(loss_itc, losses["loss_itc"], atol=1e-5)

# %%
viz.similarity_heatmap(s.cpu(), batch["caption"], title="ITC scores: composed query (row) vs target (column)",
                       xlabel="target image")

# %% [markdown]
# A trained model lights up the diagonal: each composed query scores its own target highest. (With
# BLIP-2's weights and an untrained prompt, in full mode without `SPRC_CIRR_MODEL`, it does not yet.)
#
# ## 5. The second branch (RTC) and the alignment loss
#
# SPRC's code trains two more things (its comments call the first block "Relative Contrastive"):
#
# - **RTC.** The caption *alone*, with the learned, shared `prompt_tokens` inserted right after its
#   [CLS] token and no image: `[CLS] prompt_tokens caption...`. Its [CLS] output h is scored against the
#   same target features with the same contrastive loss. This teaches the text path to read a relative
#   caption *behind a prompt*, the situation the text pass puts it in.
# - **Alignment.** An MSE between the mean of the sentence-level prompt P and the mean of the learned
#   `prompt_tokens` (which receive no gradient from it: `detach`). It keeps the image-dependent prompts
#   in the same region of the embedding space as the learned ones.

# %%
with torch.no_grad():
    embedded = model.prompt_embeddings(ids)  # (B, 1 + Q + L - 1, H): [CLS], prompt_tokens, the rest
    h = model.prompt_text_pass(ids, mask)  # (B, D)
    loss_rtc = F.cross_entropy(model.scores(h, g) / model.temp, labels)
    loss_align = F.mse_loss(P.mean(1), model.prompt_tokens.expand(BATCH, -1, -1).mean(1))
print(f"RTC input {tuple(embedded.shape)}, h {tuple(h.shape)}")
print(format_table(["loss", "by hand", "model"], [
    [name, f"{mine.item():.4f}", f"{losses[name].item():.4f}"]
    for name, mine in (("loss_itc", loss_itc), ("loss_rtc", loss_rtc), ("loss_align", loss_align))]))
assert embedded.shape == (BATCH, L + Q, model.config.qformer_config.hidden_size)
assert torch.allclose(loss_rtc, losses["loss_rtc"], atol=1e-5) and torch.allclose(loss_align, losses["loss_align"], atol=1e-6)

# %% [markdown]
# The trainer weighs them as the authors' scripts do:

# %%
for dataset in ("CIRR", "FashionIQ"):
    recipe = recipe_for(dataset, "blip2-vitg")
    print(f"{dataset}: loss = itc + {recipe.loss_rtc} * rtc + {recipe.loss_align} * align")

# %% [markdown]
# **Paper vs code (SPRC issue #17).** The paper describes the alignment loss against an *auxiliary
# prompt built per sample*. The released code aligns with the single learned `prompt_tokens` shared by
# all samples, as above, and that code produced the released numbers. This course follows the code, so
# its models can load and reproduce the released checkpoints (notebook 06); `SPRCModel.forward` carries
# a comment saying so.
#
# ## 6. Why the prompt helps: SPRC against late fusion
#
# The simplest composition is **late fusion**: encode the reference image (mean of its Q normalised
# features) and the caption (BLIP-2's text feature) separately, add the two unit vectors, normalise.
# The text can then only *add* a direction; it cannot say *which part* of the image to change. In SPRC
# the caption and the image meet inside the Q-Former, token by token, before anything is pooled.
#
# We evaluate both on the validation split, the same way (CIRR protocol, `cirr_metrics`), with the
# **same weights**, so only the way of composing differs. Two one-sided baselines (image only, text only)
# and chance complete the picture.

# %%
queries = CIRRDataset(root, "val", "relative")
index = index_features(course.context(model, tokenizer), CIRRDataset(root, "val", "classic"))
refs, captions = relative_queries(queries)
targets, members = [t.target for t in queries.triplets], [list(t.members) for t in queries.triplets]
row = {name: i for i, name in enumerate(index.names)}


def in_batches(fn, *tensors, size: int = 256) -> torch.Tensor:
    """Run `fn` on slices of the tensors and concatenate: a whole split at once may not fit a GPU."""
    with torch.no_grad():
        return torch.cat([fn(*(t[i : i + size] for t in tensors)) for i in range(0, len(tensors[0]), size)])


def evaluate(query_features: torch.Tensor) -> dict[str, float]:
    """CIRR validation metrics of one query feature per validation query, scored as BLIP-2 scores."""
    scores = in_batches(lambda q: model.scores(q, index.features).cpu(), query_features)
    return cirr_metrics(scores, index.names, refs, targets, members)


val_ids, val_mask = (t.to(device) for t in tokenize(tokenizer, captions, L))
reference_rows = torch.tensor([row[r] for r in refs])
image_only = F.normalize(index.features[reference_rows].mean(1), dim=-1)
text_only = in_batches(model.text_features, val_ids, val_mask)
late_fusion = F.normalize(image_only + text_only, dim=-1)
composed = in_batches(lambda r, i, m: model.composed_features(index.embeds[r], i, m), reference_rows.to(device), val_ids, val_mask)
sprc_name = "SPRC" if trained else "SPRC (untrained prompt)"
results = {"chance": chance("CIRR", root), "image only": evaluate(image_only), "text only": evaluate(text_only),
           "late fusion": evaluate(late_fusion), sprc_name: evaluate(composed)}
keys = ["recall_at1", "recall_at5", "recall_at10", "recall_at50", "recall_subset_at1"]
print(format_table(["method", *keys], [[name, *(f"{m[k]:.1f}" for k in keys)] for name, m in results.items()]))

# %%
viz.recall_bars(results, keys, title=f"CIRR val ({'toy' if MODE == 'tiny' else 'real'}): same weights, different composition")

# %%
assert results["late fusion"]["recall_at10"] > results["chance"]["recall_at10"]
if trained:
    for k in ("recall_at1", "recall_at10", "recall_at50"):
        assert results[sprc_name][k] > results["late fusion"][k], k

# %% [markdown]
# Late fusion is well above chance: both halves carry information. But SPRC is far better at every K,
# and far better at Recall_subset, where all candidates resemble the reference and only the *change*
# distinguishes them. (The image-only row's subset recall sits near chance: it cannot know which
# look-alike was asked for.)
#
# ## 7. A short training: the losses fall
#
# Finally, the library's trainer for a few dozen steps, starting (like the paper) from the pretrained
# backbone, BLIP-2 in full mode or the tiny BLIP-2 in tiny mode, with fresh prompt tokens. The trainer
# calls back after every step with the three losses; we keep them and plot them. The run writes into a
# temporary folder that is removed afterwards.

# %%
history = []


def record(kind: str, info: dict) -> None:
    if kind == "step":
        history.append(info["losses"])


with tempfile.TemporaryDirectory(prefix="sprc-run-") as run_dir:
    config = TrainConfig(dataset="CIRR", data_path=str(root), preset=course.preset, model_path=course.weights,
                         output_dir=run_dir, batch_size=TRAIN_BATCH, num_workers=0, seed=SEED, num_epochs=1,
                         schedule_over_run=True)  # one epoch's schedule: past the warm-up within the steps run
    result = train(config, callback=record, stop_after_steps=course.bounded(TRAIN_STEPS))
print(f"{len(history)} steps of {TRAIN_BATCH} triplets")
viz.loss_curves(history, ["loss", "loss_itc", "loss_rtc", "loss_align"], title="the first training steps")

# %%
third = len(history) // 3
for name in ("loss", "loss_itc", "loss_rtc", "loss_align"):
    values = torch.tensor([step[name] for step in history])
    first, last = values[:third].mean().item(), values[-third:].mean().item()
    print(f"{name}: first third {first:.3f} -> last third {last:.3f}")
    assert torch.isfinite(values).all()
    assert last < first or name == "loss_align", name  # the contrastive losses fall; alignment may not yet
assert len(history) == course.bounded(TRAIN_STEPS) and not result.finished

# %% [markdown]
# In a few dozen steps the contrastive losses drop from about ln(batch), where every target is equally
# likely. The alignment loss may rise at first, while the fusion outputs P change fast, and then shrinks
# as P and the fresh prompt tokens move together.
# Notebook 04 runs the full recipe, watches recall as well as loss, and resumes interrupted runs.
#
# ## Exercises
#
# **Exercise 1.** Is the prompt really carrying the image? Replace P by the plain learned queries
# (`model.query_tokens`, which have not seen any image) in the text pass, evaluate on validation, and
# compare with SPRC.

# %% jupyter={"source_hidden": true} tags=["solution"]
def blind_query(i: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return model.text_pass(model.query_tokens.expand(len(i), -1, -1), i, m)


blind = evaluate(in_batches(blind_query, val_ids, val_mask))
print(format_table(["", *keys], [[name, *(f"{m[k]:.1f}" for k in keys)]
                                 for name, m in (("P from the image", results[sprc_name]), ("no image in P", blind))]))
# Without the reference image the query only knows the caption: recall drops toward the text-only row.

# %% [markdown]
# **Exercise 2.** Give late fusion a weight: `normalise(a * image + (1 - a) * text)` for a in
# {0, 0.25, 0.5, 0.75, 1}. Does any a come close to SPRC's R@10?

# %% jupyter={"source_hidden": true} tags=["solution"]
sweep = []
for a in (0.0, 0.25, 0.5, 0.75, 1.0):
    m = evaluate(F.normalize(a * image_only + (1 - a) * text_only, dim=-1))
    sweep.append([f"{a:.2f}", f"{m['recall_at10']:.1f}", f"{m['recall_subset_at1']:.1f}"])
print(format_table(["a", "recall_at10", "recall_subset_at1"], sweep))
print(f"SPRC: recall_at10 {results[sprc_name]['recall_at10']:.1f}")
# No weight closes the gap: adding vectors cannot express "this shape, but red".

# %% [markdown]
# **Exercise 3.** The RTC pass reorders the sequence to `[CLS] prompt_tokens rest-of-caption` but keeps
# the mask `cat(ones(Q), caption_mask)` that the other passes use, as the authors' code does. Build the
# mask that follows the new layout token by token, and show that the two are the same. Why?

# %% jupyter={"source_hidden": true} tags=["solution"]
ones = torch.ones(len(mask), Q, dtype=mask.dtype, device=mask.device)
reused = torch.cat([ones, mask], dim=1)  # what the code passes
following = torch.cat([mask[:, :1], ones, mask[:, 1:]], dim=1)  # [CLS]'s mask, the prompts', the rest's
print("identical:", torch.equal(reused, following))
assert torch.equal(reused, following)
# They differ only if [CLS] could be padding, and it never is: mask[:, 0] == 1, so shifting that 1 from
# the front of the caption's mask to after the Q prompt ones changes nothing.

# %% [markdown]
# ## Recap
#
# - **Fusion pass**: queries + caption + reference image → the sentence-level prompt P (Q vectors).
# - **Text pass**: P + caption, no image, all positions through the text FFN → f at the caption's [CLS].
# - **ITC**: f against the targets' Q features, max over queries, temperature, cross-entropy; computed by
#   hand it equals the model's `loss_itc`.
# - **RTC** trains the caption behind the learned `prompt_tokens`; **alignment** pulls the mean of P
#   toward theirs. The code aligns with the shared `prompt_tokens`, not the paper's per-sample prompt
#   (issue #17), and we follow the code.
# - With the same weights, composing inside the Q-Former beats late fusion by a wide margin, most of all
#   on the subset recall, where only the modification tells the candidates apart.
# - A few training steps already bring all three losses down.
#
# Next: **04 training**, the full recipe with live curves, checkpoints and resume.
