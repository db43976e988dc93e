# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
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
# # 02 · The BLIP-2 backbone: ViT, Q-Former, query tokens
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sprc-course/sprc-course/blob/main/notebooks/02_blip2_backbone.ipynb)
#
# SPRC ([paper](https://arxiv.org/abs/2310.05473), [the authors' code](https://github.com/chunmeifeng/SPRC))
# does not build an image or a text encoder from scratch: it starts from the first stage of
# [**BLIP-2**](https://arxiv.org/abs/2301.12597), a frozen vision transformer (ViT) and a small BERT-like
# transformer, the **Q-Former**, that reads the image through a fixed set of learned **query tokens**.
# This notebook takes that backbone apart and runs it one step at a time, printing every tensor's shape,
# before notebook 03 adds SPRC's own idea.
#
# In tiny mode the backbone is a BLIP-2 of the same structure, shrunk and pretrained here on the toy
# images with their absolute captions ("a big red disc in the top left corner"); in full mode it is
# `Salesforce/blip2-itm-vit-g`, the checkpoint the paper starts from.
#
# **Recap of notebook 01**, from memory before you start (its key takeaways hold the answers):
# 1. Which fields does a CIRR caption record carry, and which does a FashionIQ one?
# 2. What does the subset recall Rs@K rank, and why does it show whether a model reads the text?
# 3. What does TargetPad do to an elongated image before the centre crop, and why?
#
# ## What you will learn
#
# - the path image → ViT → `ln_vision` → Q-Former with learned query tokens → projection, with shapes;
# - how one Q-Former serves images and text: cross-attention every second layer, and separate
#   feed-forward networks (FFNs) for query-token and text positions;
# - what image features (one vector per query token) and text features (one vector) are;
# - how BLIP-2 scores an image against a text (**max over the query tokens**), that it retrieves, and
#   how to count which query tokens the max actually picks;
# - how to read attention weights out of the Q-Former and draw where each query token looks.

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
import random
from collections import Counter

import torch
from IPython.display import display
from transformers import Blip2Config, Blip2ForImageTextRetrieval

from sprc_lib import build_transform, format_table, load_model, load_rgb, load_tokenizer, tokenize
from sprc_lib.course import answers, course_mode, setup
from sprc_lib.course import figures as viz
from sprc_lib.course.exercises import check

# %% tags=["parameters"]
MODE = course_mode()  # "tiny": the tiny BLIP-2 pretrained on toy captions; "full": Salesforce/blip2-itm-vit-g
SEED = 0  # which image-caption pairs are drawn for the retrieval test
N_PAIRS = 256  # image-caption pairs in the retrieval test (chance top-1 = 1 / N_PAIRS)
BATCH = 64  # images per forward pass

# %%
course = setup(MODE)  # the data, cache, model sizes, weights and device of this mode

# %% [markdown]
# ## 1. Loading BLIP-2
#
# The pretrained backbone is an ordinary `transformers` model. In tiny mode we load it with
# `transformers` itself first, to see that it is a genuine `Blip2ForImageTextRetrieval`, the same class
# as the hub checkpoint, only smaller.

# %%
weights, device = course.weights, course.device  # the tiny BLIP-2, or Salesforce/blip2-itm-vit-g
if MODE == "tiny":
    blip = Blip2ForImageTextRetrieval.from_pretrained(weights)
    print(f"{type(blip).__module__}.{type(blip).__name__}: {sum(p.numel() for p in blip.parameters()):,} parameters")
    assert isinstance(blip, Blip2ForImageTextRetrieval)
else:  # the 1.2B-parameter model is loaded once, below; its config says what class it is
    print(Blip2Config.from_pretrained(weights).architectures)

# %% [markdown]
# The course's `SPRCModel` holds the same parts under the same names, plus what SPRC adds (prompt tokens
# and a temperature; notebook 03). `load_model` copies BLIP-2's weights into it; in tiny mode the table
# below adds up to exactly the parameter count printed above (asserted):

# %%
model = load_model(weights).to(device).eval()
tokenizer = load_tokenizer(weights)
if MODE == "tiny":
    assert torch.equal(model.query_tokens, blip.query_tokens)
    assert torch.equal(model.vision_projection.weight, blip.vision_projection.weight)
    blip_total = sum(p.numel() for p in blip.parameters())
    del blip
if device.type == "cuda":
    model.set_vit_dtype(torch.float16)  # the frozen ViT in half precision, as the paper keeps it

parts = {
    "ViT (frozen)": model.vit_parameters(),
    "ln_vision": list(model.ln_vision.parameters()),
    "query tokens": [model.query_tokens],
    "Q-Former (+ word embeddings)": [*model.qformer.parameters(), *model.embeddings.parameters()],
    "projections": [*model.vision_projection.parameters(), *model.text_projection.parameters()],
    "ITM head (kept from BLIP-2, unused by SPRC)": list(model.itm_head.parameters()),
}
print(format_table(["part", "parameters"], [[name, f"{sum(p.numel() for p in ps):,}"] for name, ps in parts.items()]))
if MODE == "tiny":
    assert sum(p.numel() for ps in parts.values() for p in ps) == blip_total
vision, qformer = model.config.vision_config, model.config.qformer_config
S, P, Dv = vision.image_size, vision.patch_size, vision.hidden_size
Q, H, D = model.config.num_query_tokens, qformer.hidden_size, model.config.image_text_hidden_size
print(f"image {S} px, patches {P} px, ViT width Dv={Dv}, {Q} query tokens of width H={H}, shared space D={D}")

# %% [markdown]
# ## 2. From pixels to image features, step by step
#
# The map for sections 2 to 4: an image goes through the frozen ViT and the trained LayerNorm
# `ln_vision`, and the resulting T image tokens reach the Q-Former only through its cross-attention.
# The Q-Former itself runs on a sequence of **query-token positions** (the Q learned query tokens) and
# **text positions** (a caption's tokens), either or both. Every layer runs self-attention over the whole
# sequence; every other layer also has a cross-attention block, which only the query-token positions
# use; and each kind of position has its own feed-forward network (FFN). The projections at the top turn
# the query-token outputs into image features and the caption's [CLS] output into a text feature.

# %%
viz.qformer_diagram()

# %% [markdown]
# We take N_PAIRS images with one text each and follow four of them through the model. In tiny mode
# they come from the tiny BLIP-2's pretraining corpus (toy images with absolute descriptions); in full
# mode they are validation targets of [CIRR](https://github.com/Cuberick-Orion/CIRR) and
# [FashionIQ](https://github.com/XiaoxiaoGuo/fashion-iq) with their modification texts, which describe
# the target only in part ("is red with long sleeves"): a harder test than BLIP-2's own captions.

# %%
pairs = random.Random(SEED).sample(course.caption_pairs(), N_PAIRS)
captions = [caption for _, caption in pairs]
transform = build_transform("targetpad", S)
pixels = torch.stack([transform(load_rgb(path)) for path, _ in pairs])
batch = pixels[:4].to(device)

with torch.no_grad():
    patches = model.vision_model.embeddings(batch.to(model.vit_dtype))  # patch embedding + [CLS] + positions
    vit_out = model.vit(batch)  # the frozen transformer blocks
    image_embeds = model.encode_image(batch)  # + ln_vision (trainable in SPRC)
    query_out = model.image_hidden(image_embeds)  # Q-Former: the query tokens cross-attend to the image
    image_feats = model.image_features(image_embeds)  # + vision projection, L2-normalised
steps = [
    ["pixels", "TargetPad + resize + crop", batch, "B, 3, S, S"],
    ["patch embedding", "vision_model.embeddings", patches, "B, 1 + (S/P)^2, Dv"],
    ["ViT", "vision_model.encoder (frozen)", vit_out, "B, T, Dv"],
    ["ln_vision", "vision_model.post_layernorm", image_embeds, "B, T, Dv"],
    ["query tokens", "query_tokens (learned)", model.query_tokens, "1, Q, H"],
    ["Q-Former", "qformer, query tokens + cross-attention", query_out, "B, Q, H"],
    ["image features", "vision_projection + normalise", image_feats, "B, Q, D"],
]
print(format_table(["step", "module", "shape", "read as"], [[s, m, str(tuple(t.shape)), r] for s, m, t, r in steps]))
T = (S // P) ** 2 + 1
assert vit_out.shape == image_embeds.shape == (4, T, Dv)
assert image_feats.shape == (4, Q, D) and torch.allclose(image_feats.norm(dim=-1), torch.ones(4, Q, device=device))

# %% [markdown]
# The ViT cuts the image into (S/P)² patches of P x P pixels and adds one [CLS] token: T tokens of width
# Dv. The ViT is frozen; only the LayerNorm after it (`ln_vision`) is trained later. The Q-Former does
# not keep all T tokens: its **Q learned query tokens** read them through cross-attention and come out
# as Q vectors. An image becomes Q feature vectors, *whatever its resolution*: 32 for the real model.
#
# ## 3. Text features
#
# Text goes through the **same** Q-Former, without query tokens and without the image: the caption's
# tokens attend to each other, and the output at the first position ([CLS]) is projected to the shared
# space.

# %%
ids, mask = tokenize(tokenizer, captions[:4], model.config.max_txt_len)
with torch.no_grad():
    text_hidden = model.qformer(query_embeds=model.embeddings(input_ids=ids.to(device)), query_length=0,
                                attention_mask=mask.to(device)).last_hidden_state
    text_feats = model.text_features(ids.to(device), mask.to(device))
print(f"caption: {captions[0]!r}")
print("tokens: ", tokenizer.convert_ids_to_tokens(ids[0][: int(mask[0].sum())]))
print(format_table(["step", "shape", "read as"], [
    ["token ids", str(tuple(ids.shape)), "B, L (padded to max_txt_len)"],
    ["Q-Former text path", str(tuple(text_hidden.shape)), "B, L, H"],
    ["text features ([CLS], projected)", str(tuple(text_feats.shape)), "B, D"],
]))
assert text_feats.shape == (4, D)

# %% [markdown]
# ## 4. Inside the Q-Former: two FFNs per layer, cross-attention every second layer
#
# Each Q-Former layer is a BERT layer with two twists, visible in the module structure (and in the
# diagram of section 2): layers 0, 2, 4, ... have a **cross-attention** block whose keys and values come
# from the image (width Dv), and every layer has **two feed-forward networks**:
# `intermediate_query`/`output_query` for query-token positions and `intermediate`/`output` for text
# positions.

# %%
layers = model.qformer.encoder.layer
rows = []
for i, layer in enumerate(layers):
    cross = f"yes, K/V from width {layer.crossattention.attention.key.in_features}" if layer.has_cross_attention else "-"
    rows.append([str(i), cross, str(hasattr(layer, "intermediate_query")), str(hasattr(layer, "intermediate"))])
print(format_table(["layer", "cross-attention to the image", "query FFN", "text FFN"], rows))
print(layers[0].crossattention)
assert [layer.has_cross_attention for layer in layers] == [i % qformer.cross_attention_frequency == 0 for i in range(len(layers))]

# %% [markdown]
# Which positions go through which FFN is decided by `query_length`: the first `query_length` positions
# are query tokens (cross-attention, query FFN), the rest text (text FFN). We can watch the routing with
# forward hooks that count how many token positions each FFN processes in each kind of pass:

# %%
routed = Counter()  # (pass, FFN) -> token positions processed, summed over layers
running = {"pass": ""}  # which pass the hooks are counting for


def count(kind: str):
    def hook(module, inputs, output):
        routed[(running["pass"], kind)] += inputs[0].shape[1]
    return hook


handles = [h for layer in layers for h in (layer.intermediate_query.register_forward_hook(count("query FFN")),
                                            layer.intermediate.register_forward_hook(count("text FFN")))]
passes = {
    "image (query tokens + image)": lambda: model.image_hidden(image_embeds),
    "text (caption alone)": lambda: model.text_features(ids.to(device), mask.to(device)),
    "query tokens + caption + image": lambda: model.fusion_pass(image_embeds, ids.to(device), mask.to(device)),
}
with torch.no_grad():
    for name, run in passes.items():
        running["pass"] = name
        run()
for h in handles:
    h.remove()
L, n = model.config.max_txt_len, len(layers)
print(format_table(["pass", "query FFN positions", "text FFN positions"],
                   [[p, str(routed[(p, "query FFN")] // n), str(routed[(p, "text FFN")] // n)] for p in passes]))
assert routed[("image (query tokens + image)", "query FFN")] == n * Q
assert routed[("text (caption alone)", "query FFN")] == 0
assert routed[("query tokens + caption + image", "text FFN")] == n * L

# %% [markdown]
# The image pass sends its Q positions through the query FFN; the text pass sends its L positions through
# the text FFN; a mixed pass splits them. That last mode, query tokens and caption together with the
# image, is exactly what SPRC's *fusion pass* uses in notebook 03.
#
# ## 5. Scoring an image against a text: max over query tokens
#
# An image has Q feature vectors, a text has one. BLIP-2 compares the text with **each** query token's
# vector and keeps the best: `score(text, image) = max_q <f_text, g_image,q>`. Because of the max, only
# the best-matching query token has to agree with a text, so different query tokens *can* serve
# different captions; whether they do is a property of the trained model, which we count below.

# %%
per_query = image_feats[0] @ text_feats[0]  # (Q,) cosine similarity of caption 0 with each query token of image 0
print("per query token:", [f"{v:.2f}" for v in per_query.tolist()])
print(f"max = {per_query.max():.3f} (query token {int(per_query.argmax())}) = model.scores: "
      f"{model.scores(text_feats[:1], image_feats[:1]).item():.3f}")
assert torch.isclose(per_query.max(), model.scores(text_feats[:1], image_feats[:1])[0, 0])

# %% [markdown]
# Now retrieval: all N_PAIRS images against all their captions. Row i of the score matrix is caption i;
# a working retriever puts the largest score of each row on the diagonal (its own image).

# %%
with torch.no_grad():
    gallery = torch.cat([model.image_features(model.encode_image(pixels[i : i + BATCH].to(device)))
                         for i in range(0, N_PAIRS, BATCH)])
    ids, mask = tokenize(tokenizer, captions, model.config.max_txt_len)
    texts = model.text_features(ids.to(device), mask.to(device))
    scores = model.scores(texts, gallery).float().cpu()  # (captions, images)
truth = torch.arange(N_PAIRS)
ranks = 1 + (scores > scores[truth, truth][:, None]).sum(1)  # where each caption's own image lands
results = {
    "text -> image R@1": (ranks == 1).float().mean().item() * 100,
    "text -> image R@5": (ranks <= 5).float().mean().item() * 100,
    "image -> text R@1": (scores.argmax(0) == truth).float().mean().item() * 100,
}
chance = {"text -> image R@1": 100 / N_PAIRS, "text -> image R@5": 500 / N_PAIRS, "image -> text R@1": 100 / N_PAIRS}
print(format_table(["", "%", "chance %"], [[k, f"{v:.1f}", f"{chance[k]:.1f}"] for k, v in results.items()]))
print(f"{len(set(captions))} distinct captions for {N_PAIRS} images")
assert results["text -> image R@1"] > 5 * chance["text -> image R@1"]
assert results["image -> text R@1"] > 5 * chance["image -> text R@1"]

# %% [markdown]
# Both directions retrieve more than five times as often as chance would (asserted). A caption does not
# mention everything (the background, the exact size), so another image can fit it just as well: R@1
# need not reach 100%, and R@5 shows how many of the misses land just behind their own image.

# %%
viz.similarity_heatmap(scores[:10, :10], captions[:10], title="scores: caption (row) vs image (column)")

# %% [markdown]
# **Which query token does the max pick?** For each of the N_PAIRS pairs, score the caption against its
# own image's Q query tokens and note which query token gives the max. If the query tokens had learned
# different jobs, different captions would pick different ones; if pretraining had collapsed onto a
# single query token, one bar would take all N_PAIRS pairs and the other Q - 1 query tokens would never
# decide a score.

# %%
own = torch.einsum("nd,nqd->nq", texts, gallery).float().cpu()  # caption i vs each query token of image i
winner = own.argmax(1)  # the query token that gives the max, per pair
wins = torch.bincount(winner, minlength=Q)
distinct = int((wins > 0).sum())
top = wins.argsort(descending=True)[: min(5, distinct)]
print(f"{distinct} of the {Q} query tokens give the max for at least one of the {N_PAIRS} pairs")
print("most often:", ", ".join(f"query token {int(q)}: {int(wins[q])} pairs" for q in top))
g = gallery.float().cpu()
alike = ((g @ g.transpose(1, 2)).sum((1, 2)) - Q).mean().item() / (Q * (Q - 1))  # mean cosine of two query tokens
print(f"how alike one image's query-token vectors are: mean pairwise cosine {alike:.2f} (1 = identical copies)")
if MODE == "tiny":
    assert alike > 0.9, alike  # the text below calls the tiny backbone's query tokens close copies
display(viz.query_token_wins(wins, title=f"which query token gives the max, over {N_PAIRS} caption-image pairs"))
assert distinct >= 3, f"only {distinct} query token(s) ever win: the backbone uses (almost) one query token"

# %% [markdown]
# Several query tokens win (at least three, asserted): which one gives the max changes from pair to
# pair. The cosine printed last says how different the candidates are: the closer to 1, the smaller
# the margins the max decides by, and in tiny mode the backbone's query tokens are close copies of each
# other (cosine above 0.9, asserted in tiny mode; compare the per-query-token scores of caption 0 above).
#
# Why the tiny backbone cannot show query tokens with different jobs: a toy caption names a few facts
# about one image (shapes, colours, where they sit), so one vector per image holds all that the
# contrastive loss ever asks about, and nothing rewards the query tokens for differing. BLIP-2's real
# query tokens were pretrained on millions of captions that each pick different things in a scene, and
# with two more losses (image-text matching, and generating the caption from the query tokens) that
# need more than one summary of the image; that is what gives them different jobs. (The tiny
# pretraining hides a random quarter of the query tokens from the max at every step; before it did,
# one query token won all 256 pairs, as `sprc_lib/training/pretrain.py` records.)
# Which captions does one query token win? Change the pair and look.

# %% tags=["try"]
# Try it: set PAIR to another index below N_PAIRS and rerun: which query token wins for that caption,
# and which other captions does the same query token win?
PAIR = 0
q = int(winner[PAIR])
print(f"caption {PAIR}: {captions[PAIR]!r}")
print(f"scores per query token: {[round(v, 2) for v in own[PAIR].tolist()]} -> query token {q} wins")
print(f"query token {q} also wins:", [captions[i] for i in (winner == q).nonzero().flatten()[:6].tolist() if i != PAIR][:5])

# %% [markdown]
# ## 6. Where do the query tokens look? Cross-attention over the patches
#
# In each cross-attention layer every query token holds a softmax distribution over the T image tokens.
# Reading those weights needs one change: the default attention implementation (PyTorch's fused SDPA)
# never materialises them, so we switch the model to the plain "eager" implementation and ask the
# Q-Former for `output_attentions=True`. It returns one tensor per cross-attention layer, shaped
# (B, heads, Q, T).

# %%
picks = [next(i for i, (path, _) in enumerate(pairs) if kind in path.parts) for kind in ("cirr_dataset", "fashionIQ_dataset")]
model.set_attn_implementation("eager")  # sdpa computes softmax(QK^T)V in one kernel and returns no weights
with torch.no_grad():
    embeds = model.encode_image(pixels[picks].to(device))  # one shapes image, one garment
    queries = model.embeddings(query_embeds=model.query_tokens.expand(len(picks), -1, -1))
    out = model.qformer(query_embeds=queries, encoder_hidden_states=embeds, output_attentions=True)
model.set_attn_implementation("sdpa")
cross = out.cross_attentions
print(f"{len(cross)} cross-attention layer(s), each {tuple(cross[0].shape)} (B, heads, Q, T)")
with torch.no_grad():
    assert torch.allclose(out.last_hidden_state, model.image_hidden(embeds), atol=1e-4)  # same result, weights exposed
assert torch.allclose(cross[0].sum(-1), torch.ones_like(cross[0].sum(-1)), atol=1e-4)  # a distribution over T

# %% [markdown]
# We average the heads of the first cross-attention layer, drop the [CLS] token, and fold the remaining
# (S/P)² weights back into the patch grid. For each image we draw the three query tokens that match its
# own caption best (the first is the one the max of section 5 picks). Each panel has its own colour
# bar: only *where* a query token looks is comparable between panels, not how sharply.

# %%
grid = S // P
matches = own[picks]  # each image's query tokens vs its own caption
for b, i in enumerate(picks):
    best = matches[b].topk(3).indices
    maps = cross[0][b].mean(0)[best, 1:].reshape(-1, grid, grid).cpu()
    display(viz.attention_maps(viz.unnormalize(pixels[i]), maps,
                               [f"query token {int(q)} (score {matches[b, q]:.2f})" for q in best], title=captions[i]))
    assert int(best[0]) == int(winner[i])  # the first panel is the max's pick

# %% [markdown]
# Bright patches are where that query token reads the image: compare the panels to see whether the
# query tokens that win read the object, a part of it, or the background. The maps are coarse (8x8
# patches in tiny mode, 16x16 for ViT-g at 224 px), and attention can park weight on a few
# uninformative tokens: a map is a hint about what the model uses, not a proof.
#
# ## Exercises
#
# **Exercise 1.** How many image tokens `T_g` does the real model's ViT-g produce (224 px images, 14 px
# patches)? How many numbers is that per image (width 1408), and how many times the Q-Former's
# 32 x 768 output (`ratio`)?

# %% jupyter={"source_hidden": true} tags=["solution"]
T_g = (224 // 14) ** 2 + 1
ratio = T_g * 1408 / (32 * 768)
print(f"ViT-g: T = {T_g} tokens x 1408 = {T_g * 1408:,} numbers; Q-Former: 32 x 768 = {32 * 768:,} ({ratio:.1f}x fewer)")
print(f"this model: T = {T} tokens x {Dv} = {T * Dv:,}; Q-Former: {Q} x {H} = {Q * H:,}")

# %% tags=["check"]
check(lambda: (T_g, round(ratio, 1)) == answers.vitg_tokens_and_ratio(),
      "T_g counts ViT-g's tokens: one per 14 x 14 patch of a 224 x 224 image, plus [CLS]; ratio compares the "
      "numbers in T_g tokens of width 1408 with those in the Q-Former's 32 of width 768")

# %% [markdown]
# **Exercise 2.** Replace the max over query tokens with the **mean** over query tokens when scoring
# (`mean_scores`: one score per caption and image, on the CPU), and compare text-to-image R@1
# (`mean_r1`, in percent) with the max's. Which works better here, and what does
# that say about how alike the query tokens' vectors are?

# %% jupyter={"source_hidden": true} tags=["solution"]
mean_scores = torch.einsum("td,nqd->tnq", texts.float().cpu(), gallery.float().cpu()).mean(-1)
mean_r1 = (mean_scores.argmax(1) == truth).float().mean().item() * 100
max_r1 = results["text -> image R@1"]
print(f"R@1 with max: {max_r1:.1f}%, with mean: {mean_r1:.1f}%")
print(f"the {'max' if max_r1 > mean_r1 else 'mean'} is better here. The max needs one query token to agree with a "
      f"text ({distinct} different ones win, section 5); the mean asks all {Q} to, which costs little when an "
      f"image's query-token vectors are alike (mean pairwise cosine {alike:.2f}, section 5)")

# %% tags=["check"]
check(lambda: torch.allclose(mean_scores.cpu(), answers.mean_pooled(texts, gallery, truth)[0], atol=1e-5)
      and abs(mean_r1 - answers.mean_pooled(texts, gallery, truth)[1]) < 1e-6,
      "average the (caption, image, query token) similarities over the query-token axis, then take R@1 as in "
      "section 5 (argmax of each caption's row == its own image), in percent")

# %% [markdown]
# **Exercise 3.** Write your own description, e.g. "a big blue circle in the center", and show the five
# best-matching images among the N_PAIRS (`row`: your text's scores against `gallery`; `best`: the five
# images' indices). Which words of your description did the model follow?

# %% jupyter={"source_hidden": true} tags=["solution"]
mine = "a big blue circle in the center" if MODE == "tiny" else "a red dress with long sleeves"
ids_mine, mask_mine = tokenize(tokenizer, [mine], model.config.max_txt_len)
with torch.no_grad():
    row = model.scores(model.text_features(ids_mine.to(device), mask_mine.to(device)), gallery)[0].cpu()
best = row.topk(5).indices
display(viz.image_row([load_rgb(pairs[i][0]) for i in best], [f"{row[i]:.2f}" for i in best], title=mine))
for i in best.tolist():
    print(f"{row[i]:.2f}  their caption: {captions[i]!r}")  # compare with your words

# %% tags=["check"]
check(lambda: isinstance(mine, str) and torch.allclose(row, answers.text_scores(model, tokenizer, mine, gallery), atol=1e-5)
      and len(best) == 5 and bool((row[best] >= row.topk(5).values[-1]).all()),
      "score your text's feature against `gallery` with model.scores, then keep the indices of the 5 highest "
      "scores (topk)")

# %% [markdown]
# ## Questions
#
# **Question 1.** The Q-Former hands on Q vectors per image instead of the ViT's T tokens. What does
# that buy for retrieval, and what does it cost, given that in BLIP-2's image pass the query tokens read
# the image without seeing any text?

# %% [markdown] jupyter={"source_hidden": true} tags=["answer"]
# **Answer.** It buys a small, fixed-size image representation (32 x 256 numbers for the real model,
# whatever the resolution), cheap to store for a whole gallery and to score with one matrix product.
# It costs a bottleneck: the query tokens must decide what to keep from the image before any text is
# known, so a detail no query token kept cannot be recovered by a caption that asks for it. SPRC's
# fusion pass (notebook 03) runs the query tokens with the caption in the same sequence, so for the
# CIR query they read the reference image knowing what the text says.
#
# *Marking (2 points):* 1 for the gain: a small, fixed-size representation per image (32 x 256 for the real
# model), cheap to store and score; 1 for the cost: the query tokens choose what to keep before any text is
# known, so a detail they dropped is lost.

# %% [markdown]
# **Question 2.** Suppose the count of section 5 showed a single bar: one query token gives the max for
# every pair. What would the image features amount to, and why would that matter for a model that
# later builds on all Q query-token outputs?

# %% [markdown] jupyter={"source_hidden": true} tags=["answer"]
# **Answer.** The score would be that one query token's similarity: effectively one vector per image,
# with the other Q - 1 vectors never deciding a score, so retrieval gains nothing from having Q of
# them, and the max and a score from that single vector would rank alike. A model that builds on all
# Q outputs (SPRC turns them into Q prompt tokens) would then start from Q - 1 vectors that its
# pretraining never pushed to describe anything a text asks about.
#
# *Marking (2 points):* 1 for: the features would amount to one vector per image (Q - 1 never decide a score); 1
# for: a model that uses all Q outputs (SPRC's prompts) starts from Q - 1 vectors pretraining never made useful.

# %% [markdown]
# ## Key takeaways
#
# - An image goes ViT (frozen) → `ln_vision` → Q-Former, where **Q learned query tokens** cross-attend
#   to the T image tokens, → projection: **Q normalised vectors per image** (32 x 256 for the real model).
# - A text goes through the same Q-Former without query tokens or image, and its [CLS] output is
#   projected: **one vector per text**.
# - Cross-attention sits in every second layer and only query-token positions use it; query-token and
#   text positions have separate FFNs, chosen by `query_length`.
# - BLIP-2 scores a text against an image as the **max over the image's query-token vectors**; this
#   backbone already retrieves images from their captions more than five times as often as chance, and
#   several of its query tokens give that max, for different pairs, by small margins.
# - With `attn_implementation="eager"` and `output_attentions=True` the Q-Former returns its
#   cross-attention weights, which we can draw over the image.
#
# ## Further reading
#
# - [BLIP-2](https://arxiv.org/abs/2301.12597) (Li et al., 2023): the Q-Former and its first-stage
#   pretraining, the source of every module in this notebook.
# - [SPRC](https://arxiv.org/abs/2310.05473) (Bai et al., ICLR 2024): why it starts from this backbone
#   and what it changes in it (notebook 03).
# - [The authors' code](https://github.com/chunmeifeng/SPRC): their Q-Former is LAVIS's BLIP-2 one, with
#   the token routing of section 4.
#
# **Next:** [03 · Sentence-level prompts](03_sentence_level_prompts.ipynb), where a reference image and a
# modification text are composed into one CIR query by running the Q-Former twice.
