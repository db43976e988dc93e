# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,jupyter,-all
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
# # 00 · Setup and tour: composed image retrieval, the course, your machine
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sprc-course/sprc-course/blob/main/notebooks/00_setup_and_tour.ipynb)
#
# This course rebuilds **SPRC** ([*Sentence-level Prompts Benefit Composed Image Retrieval*](https://arxiv.org/abs/2310.05473),
# ICLR 2024; [the authors' code](https://github.com/chunmeifeng/SPRC)) one idea per notebook. It is built
# on [BLIP-2](https://arxiv.org/abs/2301.12597), and *sentence-level* names its idea: BLIP-2's Q-Former
# reads the reference image together with the modification text and turns them into a prompt of several
# vectors (one per query token) that the text encoder then reads in front of the text, where earlier
# methods such as [Pic2Word](https://arxiv.org/abs/2302.03084) and [SEARLE](https://arxiv.org/abs/2303.15247)
# turn the image into a single pseudo-word (notebook 03 builds the prompt and compares the approaches).
#
# Every notebook runs in two sizes: **tiny** (any laptop CPU, minutes, toy data and a small model built
# here) and **full** (a GPU, the real datasets and BLIP-2 ViT-g). The code is the same; only the data and
# the weights change. The library `sprc_lib` does the work; the notebooks explain it and let you poke at it.
#
# ## What you will learn
#
# - what composed image retrieval (CIR) asks for, from one picture of a CIR query;
# - the map of the course's notebooks (00 to 07) and what each one adds;
# - how to check your environment (versions, device, GPU memory, Colab or not);
# - what the *tiny* and *full* modes are, which one is active, and how to switch;
# - where things live in `sprc_lib`, and what a trained model does with a query you type.

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
import importlib
import os
from pathlib import Path

import torch
from IPython.display import display

from sprc_lib import BLIP2_RETRIEVAL, CIRRDataset, FashionIQDataset, environment_report, format_table, on_colab
from sprc_lib.course import Query, Retriever, answers, course_mode, retrieval_grid, setup
from sprc_lib.course import figures as viz
from sprc_lib.course.exercises import check
from sprc_lib.course.setup import LOCATIONS, MODES
from sprc_lib.course.tour import first_in_top, pick_title, recall_and_chance

# %% tags=["parameters"]
MODE = course_mode()  # "tiny" unless the environment variable SPRC_MODE=full says otherwise
TOP_K = 5  # how many gallery images each query shows, and the K of the Recall@K in section 6

# %%
course = setup(MODE)  # the data, cache, model sizes, weights and device this mode uses (see section 4)

# %% [markdown]
# ## 1. Composed image retrieval in one picture
#
# In ordinary image search you describe what you want in words (text-to-image) or show an example
# (image-to-image). Composed image retrieval takes **both**: a *reference image* and a *modification
# text* that says how the image you want differs from it. "This dress, but red." "These two dogs, but
# only one of them, lying down." The answer is the *target image*, somewhere in a large gallery.
#
# Such a pair of a reference image and a modification text is a **CIR query**. The paper evaluates on
# two datasets of them, [CIRR](https://github.com/Cuberick-Orion/CIRR) (real-life photos;
# [paper](https://arxiv.org/abs/2108.04024)) and [FashionIQ](https://github.com/XiaoxiaoGuo/fashion-iq)
# (product photos of clothes; [paper](https://arxiv.org/abs/1905.12794)). The course's toy data draws
# the task small enough to see at a glance. Here is one CIR query from the toy version of CIRR (coloured
# shapes on a 3x3 grid):

# %%
root = course.need_data("CIRR")  # tiny: the toy copies, generated on first use; full: your CIRR (notebook 01)
course.need_data("FashionIQ")
KIND = "toy" if MODE == "tiny" else "real"
cirr_val = CIRRDataset(root, "val", "relative")
# the rule: the shortest validation caption that asks for red
example = min((t for t in cirr_val.triplets if "red" in t.caption.lower().split()), key=lambda t: len(t.caption))
viz.show_query(cirr_val.load_image(example.reference), example.caption, cirr_val.load_image(example.target),
               title=f"a CIR query ({KIND} CIRR)")

# %% tags=["try"]
# Try it: change WORD to another word of the captions ("blue", "left", "bigger", "gone") and rerun this cell.
WORD = "circle"
found = min((t for t in cirr_val.triplets if WORD in t.caption.lower().split()), key=lambda t: len(t.caption),
            default=None)
if found is None:
    print(f"no validation caption has the word {WORD!r}: try another one")
else:
    display(viz.show_query(cirr_val.load_image(found.reference), found.caption, cirr_val.load_image(found.target),
                           title=f"the shortest caption with {WORD!r}"))

# %% [markdown]
# The text alone ("make it red") is useless without the image, and the image alone does not say what to
# change: the query is the *composition* of the two. FashionIQ, the other dataset of the paper, asks the
# same about clothes, with two short texts per CIR query:

# %%
fiq_val = FashionIQDataset(root, "val", ["dress"], "relative", skip_missing=course.skip_missing)
dress = fiq_val[max(range(len(fiq_val)), key=lambda i: len(fiq_val.caption(i)))]  # the wordiest query
viz.show_query(fiq_val.load_image(dress["reference_name"]), dress["caption"], fiq_val.load_image(dress["target_name"]),
               title=f"a CIR query ({KIND} FashionIQ, dress)")

# %% [markdown]
# A model answers a CIR query by giving every gallery image a score and ranking them. It is judged by
# **Recall@K**: how often the target is among the first K. A random ranking of N images puts it there
# with probability K/N; every number in this course is shown beside that chance level.
#
# ## 2. The course map
#
# | notebook | what you do | what you take away |
# | --- | --- | --- |
# | **00 setup and tour** | check the machine, see a query, meet the library | the task, the modes, the map |
# | **01 data** | open CIRR and FashionIQ (toy copies in the real layouts), draw triplets, pad images, check a broken download | the datasets' files and schemas; TargetPad; how to get the real data |
# | **02 BLIP-2 backbone** | run ViT → Q-Former → projections step by step, retrieve images from text, look at cross-attention | what BLIP-2's 32 query tokens are and how retrieval scores them |
# | **03 sentence-level prompts** | run SPRC pass by pass, compute its three losses by hand, compare it with a late-fusion baseline, train a little | SPRC's idea: the image becomes a *prompt* for the text encoder |
# | **04 training** | the paper's recipe, live curves, checkpoints and resume, the feature cache, several GPUs | how a run is set up, watched and continued |
# | **05 evaluation** | metrics by hand then by the library, CIRR and FashionIQ validation, a test submission, failure cases, an explorer | what the numbers mean and where the model fails |
# | **06 reproducing the paper** | download the authors' checkpoints, convert, evaluate, compare | whether the rebuild matches the paper |
# | **07 re-ranking (SPRC²)** | a second stage that reads each of SPRC's best candidates with the query: its hard negatives, its ceiling, its cost, fusion | when a slower, finer model pays for itself |
#
# Three ways to run the same code:
#
# | track | where | model | data |
# | --- | --- | --- | --- |
# | tiny (default) | any CPU; minutes | a BLIP-2-shaped model pretrained here on toy captions | toy datasets generated by the library, in the real layouts |
# | full | a GPU (Colab, a workstation) | BLIP-2 ViT-g + Q-Former from `Salesforce/blip2-itm-vit-g` | the real CIRR and FashionIQ |
# | reproduce (notebook 06) | a GPU | the authors' released SPRC checkpoints | the real validation and test splits |
#
# The tiny track is not a mock: the same classes, losses, trainer and metrics run, and the tiny model
# really learns: its Recall@5 is at least five times the chance level (section 6 measures it and
# asserts so).
#
# ## 3. Your environment

# %%
report = {**environment_report(), "mode": MODE}
print(format_table(["", "value"], [[key, value] for key, value in report.items()]))
device = course.device
assert MODE in MODES
assert (device.type == "cuda") == torch.cuda.is_available() == ("gpu" in report)
assert report["colab"] == ("yes" if on_colab() else "no")

# %% [markdown]
# Read it from the top: the Python and library versions (the course needs `transformers` 5 and a recent
# `torch`), the platform and CPU cores, whether this is Colab, the **mode**, and the device the course
# will use. With a CUDA GPU you also see its name, its memory and whether it supports bfloat16 (the
# trainer then uses bf16 autocast; older GPUs such as the T4 get fp16 with a gradient scaler, as the
# authors' code does).
#
# ## 4. Tiny or full: the mode
#
# The mode comes from one environment variable, read by `course_mode()` in every notebook's parameters
# cell; `setup(MODE)`, in the cell after it, turns the mode into the data, cache, model sizes and
# weights the notebook uses. It is **tiny** unless `SPRC_MODE=full` is set, because tiny runs anywhere in minutes and full
# needs a GPU, a download of BLIP-2 (about 4 GB) and the real datasets (which you must request; see
# notebook 01). To switch:
#
# - locally, start JupyterLab with the variable set: `SPRC_MODE=full make lab`;
# - on Colab (or any running kernel), run `%env SPRC_MODE=full` in a new cell *before* the parameters
#   cell, then run the notebook from there;
# - going back: `%env SPRC_MODE=tiny`, or unset it.

# %%
plan = {
    "tiny": ["toy CIRR and FashionIQ (generated by the library)", "the tiny BLIP-2 pretrained on toy captions",
             "any CPU; each notebook in a few minutes"],
    "full": ["the real CIRR and FashionIQ (see notebook 01)", f"BLIP-2 ({BLIP2_RETRIEVAL} by default)",
             "a CUDA GPU"],
}
print(format_table(["", f"this session ({MODE})"], list(zip(["data", "weights", "needs"], plan[MODE], strict=True))))
if MODE == "full" and device.type != "cuda":
    print("\nWARNING: full mode without a GPU will be very slow; on Colab choose Runtime > Change runtime type > GPU.")

# %% [markdown]
# Full mode takes every location from these environment variables, and from nowhere else (the README
# lists the same). Set them before the parameters cell (`%env SPRC_DATA=/content/data` on Colab); what
# is left unset takes the default shown.

# %%
now = course.locations()  # what each variable amounts to in this session (None: not used, or not given)
print(format_table(["variable", "what it holds", "this session"],
                   [[name, text, "-" if now[name] is None else Path(str(now[name])).name] for name, text in LOCATIONS.items()]))
assert set(now) == set(LOCATIONS)

# %% [markdown]
# ## 5. A tour of the library
#
# Each notebook imports a few names from `sprc_lib` (the core: data, model, training, evaluation) and
# from `sprc_lib.course` (what only the course needs: set-up, figures, curves, the explorer); the code
# you would otherwise copy from cell to cell lives there, with its own tests. The core never imports
# the course. Each module says in its first line why it exists:

# %%
modules = ["data", "data.toy", "data.check", "model", "model.loading", "features", "training", "training.config",
           "training.trainer", "evaluation", "evaluation.metrics", "course", "course.figures", "cli"]
rows = []
for name in modules:
    module = importlib.import_module(f"sprc_lib.{name}")
    rows.append([f"sprc_lib.{name}", module.__doc__.strip().splitlines()[0]])
print(format_table(["module", "what it is for"], rows))

# %% [markdown]
# ## 6. A first CIR query, ranked
#
# Here is where the course is going. `course.trained("CIRR")` returns an SPRC model trained on CIRR: in
# tiny mode the tiny one (on a fresh machine copied from the weights shipped with the course, seconds), in full
# mode the model folder `SPRC_CIRR_MODEL` names. A `Retriever` encodes every image of the validation
# gallery once, then scores every validation CIR query against all of them, ranking exactly as the
# metrics of notebook 05 count. CIRR's protocol never counts the reference image itself as an answer,
# so it is removed from the ranking.

# %%
retriever = None  # full mode without a trained model (SPRC_CIRR_MODEL) skips this section
if course.has_trained("CIRR"):
    retriever = Retriever.for_split(course.context(*course.trained("CIRR")), "CIRR", root)
    results = retriever.retrievals(TOP_K)  # every validation CIR query, in file order: top-K and target rank
    print(f"gallery: {len(retriever.gallery_names)} images, {len(results)} validation CIR queries ranked")
else:
    print("full mode: set SPRC_CIRR_MODEL to a trained model (notebook 04 or 06) to see this section")

# %% [markdown]
# Which CIR query to show first? The rule: **the first validation query, in file order, whose target the
# model ranks in its top five**; if there is none (a model trained for a few steps only may have none),
# the query whose target it ranks best. The title says which case it is and where the target is ranked.

# %%
if retriever is not None:
    index, first = first_in_top(results, TOP_K)  # the rule above, in sprc_lib/course/tour.py
    display(retrieval_grid(retriever, [first], title=pick_title(index, first, TOP_K, len(results))))
    in_top = first.target_rank <= TOP_K
    assert (first.target_position is not None) == in_top  # framed green among the top K exactly when it is there
    recall, chance = recall_and_chance(results, TOP_K)
    print(f"Recall@{TOP_K} over all {len(results)} validation CIR queries: {recall:.1%} "
          f"(a random ranking: {chance:.1%}, so {recall / chance:.0f} times chance)")
    if course.max_steps is None:  # a fully trained model; a bounded stand-in run may reach neither
        assert in_top, first.target_rank
        assert recall >= 5 * chance, (recall, chance)

# %% [markdown]
# When the target is in the top five, it is framed in green there; when it is not, it is added at the
# end of the row with its rank (the cell asserts which). With the tiny model the rule finds a query with
# its target in the top five, and its Recall@5 is at least five times chance: the cell asserts both
# unless `SPRC_MAX_STEPS` bounds training (CI's stand-in run). Look at the other top answers: which
# part of the modification does each get right, and which part does it miss? Notebook 05 measures the
# model over the whole validation set with the paper's metrics; notebooks 02 and 03 explain how it got there.
#
# ## Exercises
#
# **Exercise 1.** Find a toy CIRR validation query (`removal`, one of `cirr_val.triplets`) whose caption
# *removes* a shape (it contains the word "remove" or says a shape "should be gone") and draw it with
# `viz.show_query`.

# %% jupyter={"source_hidden": true} tags=["solution"]
removal = next(t for t in cirr_val.triplets if "remove" in t.caption.lower() or "gone" in t.caption.lower())
viz.show_query(cirr_val.load_image(removal.reference), removal.caption, cirr_val.load_image(removal.target))

# %% tags=["check"]
check(lambda: removal in cirr_val.triplets and ("remove" in removal.caption.lower() or "gone" in removal.caption.lower()),
      "removal should be one of cirr_val.triplets whose caption contains 'remove' or 'gone'")

# %% [markdown]
# **Exercise 2.** `course_mode()` reads `SPRC_MODE`. What does it return for `"Full "` (capital, trailing
# space)? And for `"huge"`? Try both without changing this kernel's mode for good, and keep the answers
# in `spaced` and `unknown` (an error as `"ValueError: "` followed by its message, `str(err)`).

# %% jupyter={"source_hidden": true} tags=["solution"]
def mode_for(value: str) -> str:
    """What course_mode() says with SPRC_MODE=value (its error, if it raises one); the kernel's mode is restored."""
    saved = os.environ.get("SPRC_MODE")
    os.environ["SPRC_MODE"] = value
    try:
        return course_mode()
    except ValueError as err:
        return f"ValueError: {err}"
    finally:
        if saved is None:
            os.environ.pop("SPRC_MODE")
        else:
            os.environ["SPRC_MODE"] = saved


spaced, unknown = mode_for("Full "), mode_for("huge")
print(f"'Full ' -> {spaced!r}")
print(f"'huge'  -> {unknown}")

# %% tags=["check"]
check(lambda: (spaced, unknown) == (answers.mode_for("Full "), answers.mode_for("huge")) and course_mode() == MODE,
      "spaced should be what course_mode() returns for 'Full ' (a mode name), unknown the error it raises for "
      "'huge' (as 'ValueError: ...'), and SPRC_MODE should be back to what it was")

# %% [markdown]
# **Exercise 3** (needs the model of section 6). Write your own modification for the example's
# reference image from section 1, e.g. "make the square green", and look at the top five
# (`retriever.search(Query(example.reference, text), k=TOP_K)`; keep both results in a list,
# `my_results`). Then change only the colour word ("make the square yellow"): how many of the five
# images stay in the top five (`kept`)?

# %% jupyter={"source_hidden": true} tags=["solution"]
my_texts = ["make the square green", "make the square yellow"] if MODE == "tiny" else ["make it green", "make it yellow"]
my_results = [] if retriever is None else [retriever.search(Query(example.reference, text), k=TOP_K) for text in my_texts]
kept = len(set(my_results[0].names) & set(my_results[1].names)) if my_results else None
if my_results:
    display(retrieval_grid(retriever, my_results, title="one word changed"))
    print(f"{kept} of the top {TOP_K} stay when only the colour word changes")

# %% tags=["check"]
check(lambda: retriever is None or (len(my_results) == 2 and my_results[0].query.reference == my_results[1].query.reference
                                   and len({r.query.text for r in my_results}) == 2
                                   and kept == answers.shared_names(*my_results)),
      "my_results should hold the two retrievals (one per text) and kept the number of images their top fives share")

# %% [markdown]
# ## Questions
#
# **Question 1.** CIRR's protocol removes the reference image from the ranking. What would go wrong if
# it stayed in?

# %% [markdown] jupyter={"source_hidden": true} tags=["answer"]
# **Answer.** The modification text asks for a change, so the reference is never the answer, yet it is
# the gallery image most like the query: a model that leaned on the image and half-ignored the text
# would often put it first, above the real target. Keeping it in would reward looking like the reference,
# not applying the modification.
#
# *Marking (2 points):* 1 for: the reference is never the answer (the text asks for a change); 1 for: it is the
# image most like the query, so it would rank first and reward ignoring the text. No point for "it would be
# counted twice" without why.

# %% [markdown]
# **Question 2.** A Recall@5 of 30% on a gallery of 360 images and the same 30% on a gallery of 2,000:
# which is the better result, and why does the course print the chance level beside every recall?

# %% [markdown] jupyter={"source_hidden": true} tags=["answer"]
# **Answer.** A random ranking puts the target in the top 5 with probability 5/N: 1.4% for 360 images,
# 0.25% for 2,000. The same 30% is about 22 times chance on the small gallery and 120 times on the
# large one, so the second model separates the target from far more distractors. A recall means little
# without the gallery size, hence the chance level beside it (and the toy numbers of the tiny track
# cannot be compared with the paper's directly).
#
# *Marking (2 points):* 1 for: chance R@5 is 5/N (1.4% on 360 images, 0.25% on 2,000), so the 2,000-image
# result is better (about 22x chance on 360 images, 120x on 2,000); 1 for: a recall means nothing without its
# gallery size, hence chance beside it. Accept ratios within 10% of those.

# %% [markdown]
# ## Key takeaways
#
# - A CIR query is a reference image plus a modification text; the answer is a gallery image, and
#   Recall@K (beside its chance level K/N) says how often it is found in the top K.
# - SPRC composes the two inside BLIP-2's Q-Former, as a sentence-level prompt (notebook 03).
# - The course has eight notebooks (00 to 07); each adds one idea, and all run in **tiny** mode on a CPU.
# - `environment_report()` tells you the versions, device and GPU; `SPRC_MODE=full` switches every
#   notebook to BLIP-2 ViT-g and the real data, through `setup(MODE)`.
# - `sprc_lib` holds the code; a `Retriever` ranks a gallery for any CIR query, and section 6 shows the
#   first validation query whose target the model puts in its top five (or says it found none).
#
# ## Further reading
#
# - [The course's glossary](GLOSSARY.md): its words, and a one-page primer on contrastive losses and
#   temperature (read it before notebook 03).
# - [Sentence-level Prompts Benefit Composed Image Retrieval](https://arxiv.org/abs/2310.05473) (Bai et
#   al., ICLR 2024): the paper this course rebuilds, with its results on CIRR and FashionIQ.
# - [The authors' code](https://github.com/chunmeifeng/SPRC): their training and evaluation scripts and
#   the released checkpoints that notebook 06 evaluates.
# - [BLIP-2](https://arxiv.org/abs/2301.12597) (Li et al., 2023): the frozen ViT and the Q-Former with
#   its 32 query tokens, on which SPRC is built (notebook 02).
# - [CIRR](https://github.com/Cuberick-Orion/CIRR) ([paper](https://arxiv.org/abs/2108.04024)): the
#   real-life CIR dataset and its test server.
# - [FashionIQ](https://github.com/XiaoxiaoGuo/fashion-iq) ([paper](https://arxiv.org/abs/1905.12794)):
#   the fashion CIR dataset, with two relative captions per query.
#
# **Next:** [01 data](01_data.ipynb), the datasets' files and what the model is actually fed.
