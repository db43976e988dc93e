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
# # 00 · Setup and tour: composed image retrieval, the course, your machine
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sprc-course/sprc-course/blob/main/notebooks/00_setup_and_tour.ipynb)
#
# This course rebuilds **SPRC** ("Sentence-level Prompts Benefit Composed Image Retrieval", ICLR 2024)
# one idea per notebook. Every notebook runs in two sizes: **tiny** (any laptop CPU, minutes, toy data
# and a small model built here) and **full** (a GPU, the real datasets and BLIP-2 ViT-g). The code is
# the same; only the data and the weights change. The library `sprc_lib` does the work; the notebooks
# explain it and let you poke at it.
#
# ## What you will learn
#
# - what composed image retrieval (CIR) asks for, from one picture of a query;
# - the map of the seven notebooks and what each one adds;
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
from sprc_lib.course import Query, Retriever, course_mode, retrieval_grid, setup
from sprc_lib.course import figures as viz
from sprc_lib.course.setup import LOCATIONS, MODES

# %% tags=["parameters"]
MODE = course_mode()  # "tiny" unless the environment variable SPRC_MODE=full says otherwise
TOP_K = 5  # how many gallery images to show for the first query

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
# The course's toy data draws this task small enough to see at a glance. Here is one query from the toy
# version of CIRR (coloured shapes on a 3x3 grid):

# %%
root = course.need_data("CIRR")  # tiny: the toy copies, generated on first use; full: your CIRR (notebook 01)
course.need_data("FashionIQ")
KIND = "toy" if MODE == "tiny" else "real"
cirr_val = CIRRDataset(root, "val", "relative")
# the rule: the shortest validation caption that asks for red
example = min((t for t in cirr_val.triplets if "red" in t.caption.lower().split()), key=lambda t: len(t.caption))
viz.show_query(cirr_val.load_image(example.reference), example.caption, cirr_val.load_image(example.target),
               title=f"a composed query ({KIND} CIRR)")

# %% [markdown]
# The text alone ("make it red") is useless without the image, and the image alone does not say what to
# change: the query is the *composition* of the two. FashionIQ, the other dataset of the paper, asks the
# same about clothes, with two short texts per query:

# %%
fiq_val = FashionIQDataset(root, "val", ["dress"], "relative")
dress = fiq_val[max(range(len(fiq_val)), key=lambda i: len(fiq_val.caption(i)))]  # the wordiest query
viz.show_query(fiq_val.load_image(dress["reference_name"]), dress["caption"], fiq_val.load_image(dress["target_name"]),
               title=f"a composed query ({KIND} FashionIQ, dress)")

# %% [markdown]
# A model answers a query by giving every gallery image a score and ranking them. It is judged by
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
# | **03 sentence-level prompts** | run SPRC pass by pass, compute its three losses by hand, beat a late-fusion baseline, train a little | SPRC's idea: the image becomes a *prompt* for the text encoder |
# | **04 training** | the paper's recipe, live curves, checkpoints and resume, the feature cache, several GPUs | how a run is set up, watched and continued |
# | **05 evaluation** | metrics by hand then by the library, CIRR and FashionIQ validation, a test submission, failure cases, an explorer | what the numbers mean and where the model fails |
# | **06 reproducing the paper** | download the authors' checkpoints, convert, evaluate, compare | whether the rebuild matches the paper |
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
# really learns (its recall is far above chance, as you will see below).
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
# paper's code does).
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
# ## 6. A first composed query
#
# Here is where the course is going. `course.trained("CIRR")` returns an SPRC model trained on CIRR: in
# tiny mode the tiny one (trained on first use, a couple of CPU minutes, then reused from disk), in full
# mode the model folder `SPRC_CIRR_MODEL` names. A `Retriever` encodes every
# image of the validation gallery once, then scores the example query from section 1 against all of
# them, ranking exactly as the metrics of notebook 05 count. CIRR's protocol never counts the reference
# image itself as an answer, so it is removed from the ranking.

# %%
retriever = None  # full mode without a trained model (SPRC_CIRR_MODEL) skips this section
if course.has_trained("CIRR"):
    retriever = Retriever.for_split(course.context(*course.trained("CIRR")), "CIRR", root)
    print(f"gallery: {len(retriever.gallery_names)} images, {len(retriever.queries)} validation queries")
else:
    print("full mode: set SPRC_CIRR_MODEL to a trained model (notebook 04 or 06) to see this section")

# %%
if retriever is not None:
    query = Query(example.reference, example.caption, example.target, label="the example")
    result = retriever.search(query, k=TOP_K)
    display(retrieval_grid(retriever, [result], title=f"\u201c{example.caption}\u201d: target ranked "
                                                      f"{result.target_rank} of {result.ranked}"))
    # A random ranking puts the target at (N-1)/2 on average; a model that learned anything does better.
    assert result.target_rank <= result.ranked / 2, result.target_rank

# %% [markdown]
# The target is framed in green when it is in the top five. The other top answers usually get part of
# the query right: the new colour on the wrong shape, or the right shape in the wrong place. Notebook 05
# measures this over the whole validation set; notebooks 02 and 03 explain how the model got there.
#
# ## Exercises
#
# **Exercise 1.** Find a toy CIRR validation query whose caption *removes* a shape (it contains the word
# "remove" or says a shape "should be gone") and draw it with `viz.show_query`.

# %% jupyter={"source_hidden": true} tags=["solution"]
removal = next(t for t in cirr_val.triplets if "remove" in t.caption.lower() or "gone" in t.caption.lower())
viz.show_query(cirr_val.load_image(removal.reference), removal.caption, cirr_val.load_image(removal.target))

# %% [markdown]
# **Exercise 2.** `course_mode()` reads `SPRC_MODE`. What does it return for `"Full "` (capital, trailing
# space)? And for `"huge"`? Try both without changing this kernel's mode for good.

# %% jupyter={"source_hidden": true} tags=["solution"]
saved = os.environ.get("SPRC_MODE")
try:
    os.environ["SPRC_MODE"] = "Full "
    print(repr(course_mode()))  # 'full': the value is stripped and lower-cased
    os.environ["SPRC_MODE"] = "huge"
    try:
        course_mode()
    except ValueError as err:
        print("ValueError:", err)  # an unknown mode fails loudly instead of silently running tiny
finally:
    if saved is None:
        os.environ.pop("SPRC_MODE")
    else:
        os.environ["SPRC_MODE"] = saved
assert course_mode() == MODE

# %% [markdown]
# **Exercise 3** (tiny mode). Write your own modification for the example's reference image, e.g.
# "make the square green" or "move the square to the bottom", and look at the top five. Does the model
# follow colour words better than positions?

# %% jupyter={"source_hidden": true} tags=["solution"]
if retriever is not None:
    my_text = "make the square green" if MODE == "tiny" else "make it green"
    display(retrieval_grid(retriever, [retriever.search(Query(example.reference, my_text), k=TOP_K)],
                           title=f"\u201c{my_text}\u201d"))

# %% [markdown]
# ## Recap
#
# - A CIR query is a reference image plus a text saying what to change; the answer is a gallery image,
#   and Recall@K (beside its chance level K/N) says how often it is found in the top K.
# - The course has seven notebooks; each adds one idea, and all run in **tiny** mode on a CPU.
# - `environment_report()` tells you the versions, device and GPU; `SPRC_MODE=full` switches every
#   notebook to BLIP-2 ViT-g and the real data, through `setup(MODE)`.
# - `sprc_lib` holds the code; the tiny SPRC model already ranks the right image high for a toy query.
#
# Next: **01 data**, the datasets' files and what the model is actually fed.
