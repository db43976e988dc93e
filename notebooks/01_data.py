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
# # 01 · Data: CIRR and FashionIQ, file by file
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sprc-course/sprc-course/blob/main/notebooks/01_data.ipynb)
#
# SPRC ([paper](https://arxiv.org/abs/2310.05473)) is trained and evaluated on two datasets: **CIRR** ([Liu et al., 2021](https://arxiv.org/abs/2108.04024);
# [repository](https://github.com/Cuberick-Orion/CIRR)): real-life photos from NLVR2 with human-written
# modification texts, and **FashionIQ** ([Wu et al., 2021](https://arxiv.org/abs/1905.12794);
# [repository](https://github.com/XiaoxiaoGuo/fashion-iq)): product photos of dresses, shirts and tops
# with two short relative captions per CIR query. Before any model, we look at what is on disk, what each
# JSON record means, what the loaders hand to the model, and how to tell a good download from a broken one.
#
# In tiny mode everything below runs on the **toy copies**, which the library generates in exactly the
# released layouts and JSON schemas; in full mode the same cells read the real datasets.
#
# **Recap of notebook 00**, from memory before you start (its key takeaways hold the answers):
# 1. What are the two parts of a CIR query, and what is its answer?
# 2. What does Recall@K count, and what is its chance level in a gallery of N images?
# 3. Which setting moves every notebook from the toy track to BLIP-2 ViT-g and the real data?
#
# ## What you will learn
#
# - the folder layouts and JSON schemas of CIRR and FashionIQ, and how to get the real data;
# - how the toy generator works, and why it is deterministic;
# - what a *relative* and a *classic* dataset are, and which splits have targets;
# - what triplets look like, and what CIRR's 6-image `img_set` is for;
# - why SPRC pads images (TargetPad) instead of cropping them;
# - how `check-data` reports a broken download, and what `skip_missing` does.

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
import json
import tempfile
import time
import warnings
from pathlib import Path

from IPython.display import display
from PIL import Image
from torchvision.transforms import Compose

from sprc_lib import CIRRDataset, DataError, FashionIQDataset, TargetPad, build_transform, format_table
from sprc_lib.course import answers, course_mode, setup
from sprc_lib.course import figures as viz
from sprc_lib.course.examples import CIRR_EXAMPLE_RECORD, CIRR_TEST_EXAMPLE_RECORD, FASHIONIQ_EXAMPLE_RECORD
from sprc_lib.course.exercises import check
from sprc_lib.data.check import check_dataset, format_reports
from sprc_lib.data.schema import (
    CIRR_IMAGE_FOLDERS,
    CIRR_SET_SIZE,
    CIRR_SPLITS,
    CIRR_TRAIN_SUBFOLDERS,
    FASHIONIQ_CATEGORIES,
    FASHIONIQ_SPLITS,
    cirr_caption_path,
    cirr_split_path,
    fashioniq_caption_path,
    fashioniq_image_dir,
    fashioniq_split_path,
)
from sprc_lib.data.toy import MARKER, generate_toy_data, toy_specs

# %% tags=["parameters"]
MODE = course_mode()  # "tiny": toy data; "full": the real datasets under `sprc_lib.paths.data_root()`
SEED = 0  # the toy generator's seed for the fresh copy drawn in section 3
N_TRIPLETS = 6  # triplets per grid
IMAGE_SIZE = 224 if MODE == "full" else 64  # the model's input size: BLIP-2 ViT-g 224 px, the tiny preset 64 px
ARCHIVES = {}  # full mode: archives to unpack first, e.g. {"CIRR": "/content/drive/MyDrive/cirr_dataset.zip"}

# %% [markdown]
# ## 1. Where the data lives, and how to get the real data
#
# Every loader takes one folder, `root`, that **contains** `cirr_dataset/` and `fashionIQ_dataset/`.
# In tiny mode that is the generated toy folder; in full mode `sprc_lib.paths.data_root()`, which is
# `$SPRC_DATA` if you set it, else the repository's `data/` folder. Paths always resolve through the
# library, so the notebook's working directory never matters.
#
# **Getting the real data (full mode).** Neither dataset's images may be redistributed, so you fetch
# them yourself:
#
# - **CIRR.** The annotations (`cirr/captions/`, `cirr/image_splits/`) are on GitHub,
#   [`Cuberick-Orion/CIRR`](https://github.com/Cuberick-Orion/CIRR), branch `cirr_dataset`. The images
#   are NLVR2's raw images, which are not downloadable by URL: fill in the request form linked from
#   [`lil-lab/nlvr`](https://github.com/lil-lab/nlvr) (folder `nlvr2`). If the
#   request goes unanswered, the CIRR README links a download of just the CIRR images, offered once the
#   form is submitted. Put val images in `dev/`, test images in `test1/`, and each train image where
#   `split.rc2.train.json` says (`./train/34/train-11041-2-img0.png`).
# - **FashionIQ.** The annotations (`captions/`, `image_splits/`) are on GitHub,
#   [`XiaoxiaoGuo/fashion-iq`](https://github.com/XiaoxiaoGuo/fashion-iq). The images are listed as Amazon URLs, and **many links are dead**: most
#   copies hold about 74,400 of the 77,684 images. Save what you can as `images/<ASIN>.png` or `.jpg`,
#   and load with `skip_missing=True`, which drops the missing images and every triplet that uses one,
#   with a warning that says how many (section 8 shows it).
#
# `data/README.md` in the repository has the full recipe. Then check the download:
# `python -m sprc_lib check-data --dataset CIRR --data-path <data>` (section 8 runs the same check here).
#
# **On Colab**, keep each dataset as one archive (`.zip`, `.tar`, `.tar.gz`) in your Google Drive and
# unpack it onto the machine's local disk at the start of a session: reading thousands of small
# images from a mounted Drive is slow. `unpack_dataset` (the command `python -m sprc_lib unpack-data
# ARCHIVE --out /content/data`) shows a progress bar, accepts the dataset folder, its bare content or
# either inside one wrapping folder, refuses anything else with a message, and then runs the same
# check as `check-data`. List your archives in `ARCHIVES` (parameters cell) with
# `%env SPRC_DATA=/content/data`, mount Drive (`from google.colab import drive;
# drive.mount("/content/drive")`), and this cell unpacks them:

# %%
course = setup(MODE)  # tiny: the toy copies (generated on first use); full: SPRC_DATA
# course.skip_missing: leave out the images a copy lacks (SPRC_SKIP_MISSING; by default in full mode, since real
# FashionIQ copies lack some, and the toy data lacks none)
course.unpack(ARCHIVES, skip_missing=course.skip_missing)  # unpack_dataset for each, or a stop naming what is wrong
root = course.need_data("CIRR")  # or a stop that says where to get it and put it
course.need_data("FashionIQ")
is_toy = (root / MARKER).exists()  # the toy generator leaves this file; a real download has none
print(f"mode {MODE}: reading {'the toy copies' if is_toy else 'the real datasets'} under {root.name}/")
print(viz.folder_tree(root / "cirr_dataset"))
print(viz.folder_tree(root / "fashionIQ_dataset"))
train_folders = [d for d in (root / "cirr_dataset" / CIRR_IMAGE_FOLDERS["train"]).iterdir() if d.is_dir()]
assert len(train_folders) == CIRR_TRAIN_SUBFOLDERS, len(train_folders)  # the 100 numbered sub-folders below

# %% [markdown]
# CIRR keeps its annotations in `cirr/` and its images in one folder per split; the **val** images
# sit in `dev/` (an NLVR2 name the split files keep), and train images are spread over 100 numbered
# sub-folders (the cell checks there are 100). FashionIQ keeps the images of all three categories in one
# `images/` folder (77,684 in the real release) and names each annotation file by category and split.
#
# ## 2. The JSON schemas
#
# Four kinds of file. A CIRR **caption file** (`cap.rc2.<split>.json`) is a list of CIR queries:

# %%
cirr_records = json.loads(cirr_caption_path(root, "val").read_text())
print(json.dumps(cirr_records[0], indent=2))
record = cirr_records[0]
assert len(record["img_set"]["members"]) == CIRR_SET_SIZE  # the 6 look-alikes described below
assert {record["reference"], record["target_hard"]} <= set(record["img_set"]["members"])
assert record["target_soft"][record["target_hard"]] == 1.0

# %% [markdown]
# - `pairid`: the query's id (the test server's key); `caption`: the modification text;
# - `reference`: the reference image's name; `target_hard`: the target's name;
# - `target_soft`: targets with partial credit (the released val/train files give the hard target 1.0);
# - `img_set`: the query's **set of 6 visually similar images** (`members`), which contains the
#   reference and, in val, the target. CIRR built each query inside such a set, and the *subset* recall
#   (section 6) ranks only these. `reference_rank`/`target_rank` come from how the set was built; the
#   loaders keep them but the metrics do not use them. (The cell checks the first record's set: 6
#   members, the reference and the target among them, the hard target's soft score 1.0.)
#
# The test split (`test1`) hides its targets: its records stop at `caption` and `img_set`. An **image
# split file** (`split.rc2.<split>.json`) maps each image name to its path. The toy copies use the same
# fields as the real files; the library keeps one real record of each kind, and we compare:

# %%
cirr_split = json.loads(cirr_split_path(root, "val").read_text())
print(dict(list(cirr_split.items())[:2]))
test_record = json.loads(cirr_caption_path(root, "test1").read_text())[0]
assert set(cirr_records[0]) == set(CIRR_EXAMPLE_RECORD), set(cirr_records[0]) ^ set(CIRR_EXAMPLE_RECORD)
assert set(cirr_records[0]["img_set"]) == set(CIRR_EXAMPLE_RECORD["img_set"])
assert set(test_record) == set(CIRR_TEST_EXAMPLE_RECORD) and "target_hard" not in test_record
print("toy CIRR records have exactly the real fields:", sorted(CIRR_EXAMPLE_RECORD))

# %% [markdown]
# FashionIQ is simpler. A caption file (`cap.<category>.<split>.json`) holds `candidate` (the reference),
# `target` (absent in test) and **two** relative captions written by two annotators; a split file is a
# plain list of image ids (ASINs):

# %%
fiq_records = json.loads(fashioniq_caption_path(root, "dress", "val").read_text())
print(json.dumps(fiq_records[0], indent=2))
print(json.loads(fashioniq_split_path(root, "dress", "val").read_text())[:3])
assert set(fiq_records[0]) == set(FASHIONIQ_EXAMPLE_RECORD)

# %% [markdown]
# ## 3. Generating toy data
#
# The toy generator first *decides* everything (scenes, garments, names, edits, captions, canvas sizes)
# from a seed, without drawing: `toy_specs(seed)`. A CIRR-like image is 1-3 shapes on a 3x3 grid; a query
# is a list of edits between two scenes, and its caption states exactly those edits, so every caption is
# true. Canvas sizes vary on purpose, to give the padding of section 7 something to do.

# %%
specs = toy_specs(SEED)
query = specs.cirr["val"].queries[0]
print("query:", query.caption)
print("edits:", query.edits)
scenes = {image.name: image for image in specs.cirr["val"].images}
print("reference scene:", scenes[query.reference].scene)
print("target scene:   ", scenes[query.target].scene)

# %% [markdown]
# `generate_toy_data(folder, seed)` then draws the images and writes every file. We draw a fresh copy
# into a scratch folder (section 8 will break it on purpose; the course's own copy stays untouched):

# %%
scratch = tempfile.TemporaryDirectory(prefix="toy-copy-")
fresh = Path(scratch.name)
start = time.perf_counter()
summary = generate_toy_data(fresh, seed=SEED)
print(f"drew {summary['pretraining_pairs']:,} pretraining pairs and both datasets in {time.perf_counter() - start:.0f} s")
rows = [["CIRR", split, "", f"{c['triplets']:,}", f"{c['images']:,}"] for split, c in summary["cirr"].items()]
rows += [["FashionIQ", split, category, f"{c['triplets']:,}", f"{c['images']:,}"]
         for category, splits in summary["fashioniq"].items() for split, c in splits.items()]
print(format_table(["dataset", "split", "category", "triplets", "images"], rows))
assert summary["cirr"]["val"]["triplets"] == len(specs.cirr["val"].queries)

# %% [markdown]
# The same seed gives the same files, byte for byte: the course's toy copy (if it was drawn with this
# seed and size) is identical to the one we just drew.

# %%
made_with = json.loads((root / MARKER).read_text()) if is_toy else None  # real data: nothing to compare
if made_with is not None and (made_with["seed"], made_with["size"]) == (SEED, summary["size"]):
    assert cirr_caption_path(fresh, "train").read_bytes() == cirr_caption_path(root, "train").read_bytes()
    print("fresh copy == course copy (cap.rc2.train.json)")
else:
    print("the data in use is not a toy copy with this seed and size: nothing to compare")

# %% [markdown]
# ## 4. Datasets in Python: splits and modes
#
# `CIRRDataset(root, split, mode)` and `FashionIQDataset(root, split, categories, mode)` read the files
# above, validate every record, and serve items in one of two **modes**:
#
# - `relative`: one item per *query* (reference name, caption, target name, and for CIRR the 6 set
#   members). Training iterates over these, and so does the query side of evaluation.
# - `classic`: one item per *gallery image*. Evaluation encodes these once and ranks them for every query.
#
# With a `preprocess` transform, items also carry image tensors; without one, names only (which is how a
# feature cache serves images later, in notebook 04).

# %%
rows = []
for split in CIRR_SPLITS:
    queries = CIRRDataset(root, split, "relative")
    gallery = CIRRDataset(root, split, "classic")
    targets = "yes" if queries.triplets[0].target else "no (hidden)"
    rows.append(["CIRR", split, "", f"{len(queries):,}", f"{len(gallery):,}", targets])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a real FashionIQ copy warns about its missing images: section 8
    for category in FASHIONIQ_CATEGORIES:
        for split in FASHIONIQ_SPLITS:
            queries = FashionIQDataset(root, split, [category], "relative", skip_missing=course.skip_missing)
            gallery = FashionIQDataset(root, split, [category], "classic", skip_missing=course.skip_missing)
            targets = "yes" if queries.triplets[0].target else "no (hidden)"
            rows.append(["FashionIQ", split, category, f"{len(queries):,}", f"{len(gallery):,}", targets])
print(format_table(["dataset", "split", "category", "relative (queries)", "classic (gallery)", "targets"], rows))

# %%
cirr_train = CIRRDataset(root, "train", "relative")
print("relative item:", cirr_train[0])
transform = build_transform("targetpad", IMAGE_SIZE)
with_pixels = CIRRDataset(root, "train", "relative", preprocess=transform)[0]
print({k: tuple(v.shape) for k, v in with_pixels.items() if hasattr(v, "shape")})
assert with_pixels["reference"].shape == (3, IMAGE_SIZE, IMAGE_SIZE)

# %% [markdown]
# ## 5. Triplets, drawn
#
# A training example is a **triplet**: reference image, modification text, target image. Reading a few
# is the fastest way to see what a dataset asks of a model.

# %%
picked = cirr_train.triplets[:N_TRIPLETS]
viz.triplet_grid([(cirr_train.load_image(t.reference), t.caption, cirr_train.load_image(t.target)) for t in picked],
                 title="CIRR train triplets")

# %% [markdown]
# FashionIQ's texts are *relative* and short ("is red with stripes", "has shorter sleeves"). At training
# time the two captions are joined at random ("c0 and c1", "c1 and c0", or one of them alone), a text
# augmentation SPRC inherits from [CLIP4Cir](https://github.com/ABaldrati/CLIP4Cir); validation always
# uses "C0 and c1".

# %%
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fiq_train = FashionIQDataset(root, "train", list(FASHIONIQ_CATEGORIES), "relative", skip_missing=course.skip_missing)
step = len(fiq_train) // N_TRIPLETS  # spread the picks over the three categories
picks = [fiq_train[i * step] for i in range(N_TRIPLETS)]
viz.triplet_grid([(fiq_train.load_image(p["reference_name"]), f"{p['dress_type']}: {p['caption']}",
                   fiq_train.load_image(p["target_name"])) for p in picks], title="FashionIQ train triplets")

# %% [markdown]
# ## 6. CIRR's `img_set`: six look-alikes
#
# Every CIRR query lives in a set of 6 similar images. The global recall (R@K) ranks the whole gallery;
# the **subset recall** (Rs@K) ranks only the 5 set members other than the reference, so it measures
# whether the model reads the *text*: the candidates all resemble the reference, and only the
# modification tells them apart. The reference is framed blue, the target green.

# %%
cirr_val = CIRRDataset(root, "val", "relative")
q = cirr_val.triplets[0]
members = list(q.members)
assert len(members) == CIRR_SET_SIZE and q.reference in members and q.target in members
viz.image_row([cirr_val.load_image(n) for n in members],
              [("reference\n" if n == q.reference else "target\n" if n == q.target else "") + n for n in members],
              {members.index(q.reference): viz.REFERENCE_COLOR, members.index(q.target): viz.TARGET_COLOR},
              title=f"img_set {q.set_id} of pair {q.pair_id}: \u201c{q.caption}\u201d")

# %% [markdown]
# ## 7. TargetPad, SquarePad, or a plain resize
#
# The model takes square inputs (224 px for BLIP-2's ViT-g). CLIP's default preprocessing resizes the
# short side and **centre-crops**, which cuts off the ends of a wide or tall image, and with them, perhaps,
# the very object the caption talks about. CLIP4Cir, and SPRC after it, pad first:
#
# - `SquarePad` pads every image with black to a square: nothing is lost, but nearly-square images
#   get thin black bars for nothing.
# - `TargetPad(1.25)` pads **only** when the aspect ratio is at least 1.25, and only up to 1.25:
#   `pad = int((long / 1.25 - short) / 2)` per side. Nearly-square images stay as they are; elongated
#   ones keep about 80% of their long side after the crop (a tenth goes at each end) and get thinner bars
#   than SquarePad's (the cell after the figure checks all three on the most elongated image).
#
# Below: the most elongated images of the validation gallery, through each pipeline (plain resize = the
# TargetPad pipeline without its first step).

# %%
targetpad = build_transform("targetpad", IMAGE_SIZE, target_ratio=1.25)
pipelines = {
    "resize + centre crop": Compose(targetpad.transforms[1:]),  # the same pipeline minus TargetPad
    "SquarePad": build_transform("squarepad", IMAGE_SIZE),
    "TargetPad(1.25)": targetpad,
}
gallery = CIRRDataset(root, "val", "classic")
sizes = {name: gallery.load_image(name).size for name in gallery.image_names[:200]}
elongated = sorted(sizes, key=lambda n: max(sizes[n]) / min(sizes[n]), reverse=True)[:3]
viz.transform_grid([gallery.load_image(n) for n in elongated], pipelines)

# %%
pad = TargetPad(1.25)
wide = gallery.load_image(elongated[0])
padded = pad(wide)
near_square = min(sizes, key=lambda n: max(sizes[n]) / min(sizes[n]))
print(f"{wide.size} -> {padded.size}: ratio {max(wide.size) / min(wide.size):.2f} -> {max(padded.size) / min(padded.size):.2f}")
kept = min(padded.size) / max(padded.size)  # the centre crop keeps a square of the short side
bars, square_bars = min(padded.size) - min(wide.size), max(wide.size) - min(wide.size)
print(f"the crop keeps {kept:.0%} of the long side; bars: {bars} px in all (SquarePad: {square_bars} px)")
assert abs(max(padded.size) / min(padded.size) - 1.25) < 0.05  # padded up to (about) the target ratio
assert abs(kept - 0.8) < 0.03 and bars < square_bars  # about 80% of the long side kept, thinner bars than SquarePad
assert pad(gallery.load_image(near_square)).size == sizes[near_square]  # below 1.25: untouched

# %% tags=["try"]
# Try it: change RATIO (1.0 pads every image to a square, like SquarePad; 2.0 pads only very long ones) and rerun.
RATIO = 1.25
for name in [*elongated, near_square]:
    image = gallery.load_image(name)
    out = TargetPad(RATIO)(image)
    print(f"{name}: {image.size} (ratio {max(image.size) / min(image.size):.2f}) -> {out.size}, "
          f"the crop then keeps {min(out.size) / max(out.size):.0%} of the long side")

# %% [markdown]
# ## 8. `check-data`: a good copy and a broken one
#
# A download can be incomplete in many ways: an image missing, a JSON file truncated, a record with a
# field missing. The loaders refuse such data with a message that names the file, the record and the
# field, and `check_dataset` (the `check-data` command) loads every split the way training will and
# reports on each. First, the copy we use:

# %%
for name in ("CIRR", "FashionIQ"):
    reports = check_dataset(name, root)
    print(format_reports(reports, root, allow_missing=course.skip_missing).replace(str(root), f"<{root.name}>"), "\n")
    assert all(r.usable(allow_missing=course.skip_missing) for r in reports)

# %% [markdown]
# Now we break the fresh toy copy from section 3 in two realistic ways: one FashionIQ image goes missing
# (a dead link), and one CIRR validation record loses its `target_hard` field (a bad edit or a truncated
# download).

# %%
gone = json.loads(fashioniq_caption_path(fresh, "dress", "val").read_text())[0]["target"]  # a dress val target
(fashioniq_image_dir(fresh) / f"{gone}.png").unlink()
broken_file = cirr_caption_path(fresh, "val")
records = json.loads(broken_file.read_text())
del records[3]["target_hard"]
broken_file.write_text(json.dumps(records, indent=2))


def hide(text: str) -> str:
    """Messages name files by full path; show them relative to the scratch copy instead."""
    return text.replace(str(fresh), "<broken copy>")


broken = {name: check_dataset(name, fresh) for name in ("CIRR", "FashionIQ")}
for reports in broken.values():
    print(hide(format_reports(reports, fresh)), "\n")
bad = {(r.dataset, r.split, r.category): r for reports in broken.values() for r in reports}
assert "target_hard" in bad["CIRR", "val", None].error and "record 3" in bad["CIRR", "val", None].error
assert [Path(m).stem for m in bad["FashionIQ", "val", "dress"].missing] == [gone]  # the report lists paths
assert bad["FashionIQ", "val", "dress"].dropped_triplets >= 1
assert [key for key, r in bad.items() if not r.usable(allow_missing=False)] == [("CIRR", "val", None), ("FashionIQ", "val", "dress")]

# %% [markdown]
# Each problem is named precisely: the CIRR val split is unusable because record 3 lacks `target_hard`;
# the FashionIQ dress val split misses one image, and the report says how many triplets use it; every
# other split is fine (the cell asserts all three). The dataset classes say the same when you load those
# splits:

# %%
try:
    CIRRDataset(fresh, "val", "relative")
except DataError as err:
    print("DataError:", hide(str(err)))
else:
    raise AssertionError("a record without target_hard must be refused")

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    dress_val = FashionIQDataset(fresh, "val", ["dress"], "relative", skip_missing=True)
print("warning:", hide(str(caught[0].message)))
print(f"kept {len(dress_val)} of {dress_val.listed_triplets} triplets; missing images: {dress_val.missing_images}")
assert dress_val.missing_images == [gone] and len(dress_val) == dress_val.listed_triplets - dress_val.dropped_triplets >= 1

# %% [markdown]
# Without `skip_missing=True` the FashionIQ split refuses to load at all: nothing is dropped silently, and
# nothing crashes twenty minutes into an epoch. We are done with the scratch copy:

# %%
scratch.cleanup()
assert not fresh.exists()

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** By hand: what size does `TargetPad(1.25)` give a 200 x 100 image, and a 120 x 100 one?
# Write your answers in a dict `by_hand` from each (width, height) to the (width, height) you expect,
# then check with the library.

# %% jupyter={"source_hidden": true} tags=["solution"]
# 200 x 100: ratio 2 >= 1.25, so pad the height by int((200 / 1.25 - 100) / 2) = 30 per side -> 200 x 160.
# 120 x 100: ratio 1.2 < 1.25, so nothing happens.
by_hand = {(200, 100): (200, 160), (120, 100): (120, 100)}
for size, expected in by_hand.items():
    print(size, "-> by hand", expected, "| the library:", TargetPad(1.25)(Image.new("RGB", size)).size)

# %% tags=["check"]
check(lambda: all(tuple(by_hand[wh]) == TargetPad(1.25)(Image.new("RGB", wh)).size for wh in ((200, 100), (120, 100))),
      "by_hand should map (200, 100) and (120, 100) to the (width, height) TargetPad(1.25) gives each")

# %% [markdown]
# **Exercise 2.** Collect the training caption of FashionIQ triplet 0 for epochs 0 to 7 in `texts`
# (`set_epoch`, then `caption(0)`), count the different ones (`distinct`), then draw epoch 3 once more
# (`repeat`). How many different texts do you see, and does the same epoch give the same text again?

# %% jupyter={"source_hidden": true} tags=["solution"]
texts = []
for epoch in range(8):
    fiq_train.set_epoch(epoch)
    texts.append(fiq_train.caption(0))
    print(epoch, texts[-1])
fiq_train.set_epoch(3)
repeat = fiq_train.caption(0)
fiq_train.set_epoch(0)
distinct = len(set(texts))
print(f"{distinct} distinct texts in 8 epochs, of the 4 possible (c0 and c1, c1 and c0, c0, c1); "
      f"captions: {fiq_train.triplets[0].captions}")
print(f"epoch 3 drawn again gives the same text: {repeat == texts[3]}")

# %% tags=["check"]
check(lambda: len(texts) == 8 and distinct == answers.distinct_texts(texts) and 1 <= distinct <= 4 and repeat == texts[3],
      "texts should list caption(0) for epochs 0 to 7 in order, distinct count the different ones, and repeat "
      "be caption(0) after set_epoch(3) again")

# %% [markdown]
# **Exercise 3.** Draw the `img_set` of another validation query (`q`, with `members = list(q.members)`)
# *without* marking the target, guess which member it is from the caption, then check: `answer` is the
# target's index among the members. Try a few queries: is it always easy?

# %% jupyter={"source_hidden": true} tags=["solution"]
q = cirr_val.triplets[7]
members = list(q.members)
display(viz.image_row([cirr_val.load_image(n) for n in members], [str(i) for i in range(6)],
                      {members.index(q.reference): viz.REFERENCE_COLOR}, title=q.caption))
answer = members.index(q.target)
print("answer: member", answer)

# %% tags=["check"]
check(lambda: q in cirr_val.triplets and members == list(q.members) and members[answer] == q.target,
      "q should be one of cirr_val.triplets, members its list(q.members), and answer the index of q.target in members")

# %% [markdown]
# ## Questions
#
# **Question 1.** CIRR reports two recalls: R@K over the whole gallery and Rs@K over the 5 other members
# of the query's `img_set`. What does each reward, and why can a model that ignores the text still score
# well on one of them?

# %% [markdown] jupyter={"source_hidden": true} tags=["answer"]
# **Answer.** The members of an `img_set` all look like the reference, so among them only the
# modification text tells the target apart: Rs@K rewards reading the text. R@K ranks the whole gallery,
# where most images look nothing like the reference; a model that only matches the reference image
# already pushes the set (and with it the target) near the top, so part of its R@K comes from image
# similarity alone. Within the set, image similarity does not say which look-alike is meant, so a
# model that ignores the text has little to go on in Rs@K, however good its R@K looks (Rs@1's chance
# level is one in five).
#
# *Marking (2 points):* 1 for: Rs@K needs the text (members all look like the reference); 1 for: R@K can be
# earned by image similarity alone, since matching the reference pulls its whole set up. Either metric named the
# wrong way round: no point.

# %% [markdown]
# **Question 2.** A FashionIQ split with missing images refuses to load unless you pass
# `skip_missing=True`, and then it warns. Why not drop the missing images quietly by default?

# %% [markdown] jupyter={"source_hidden": true} tags=["answer"]
# **Answer.** Dropping changes what is measured: fewer validation queries, and a smaller gallery, which
# makes retrieval easier, so a recall on a copy with many dead links is not the recall on the real split
# and cannot be set beside the paper's. A quiet drop would also hide a download that is broken for
# another reason (a wrong folder, a failed unpack). Asking for it by name, with a warning that says how
# many images and triplets went, keeps both visible.
#
# *Marking (2 points):* 1 for: dropping changes what is measured (fewer queries, a smaller and easier gallery,
# not comparable with the paper); 1 for: a quiet drop hides a broken download. "Errors are annoying" gets no
# point.

# %% [markdown]
# ## Key takeaways
#
# - Both datasets are a folder of images plus JSON files: CIRR's caption records carry `pairid`,
#   `reference`, `target_hard`, `caption` and a 6-member `img_set`; FashionIQ's carry `candidate`,
#   `target` and two captions. Test splits hide targets.
# - The toy generator decides everything from a seed (`toy_specs`) and then draws it
#   (`generate_toy_data`), in exactly the real layouts.
# - `relative` datasets serve CIR queries, `classic` ones serve the gallery.
# - CIRR's `img_set` holds 6 look-alikes; the subset recall Rs@K ranks only them, so it measures whether a
#   model reads the modification text.
# - TargetPad pads elongated images to a ratio of 1.25 before the centre crop, so the crop keeps about 80% of
#   the long side instead of only the middle square.
# - `check-data` and the loaders name every missing file and bad record; `skip_missing=True` drops
#   FashionIQ's dead links openly.
#
# ## Further reading
#
# - [CIRR](https://github.com/Cuberick-Orion/CIRR) and its paper, [Image Retrieval on Real-life Images with
#   Pre-trained Vision-and-Language Models](https://arxiv.org/abs/2108.04024) (Liu et al., ICCV 2021): the
#   annotation files, how the 6-image sets were built, and the test server.
# - [FashionIQ](https://github.com/XiaoxiaoGuo/fashion-iq) and its paper, [Fashion IQ: A New Dataset Towards
#   Retrieving Images by Natural Language Feedback](https://arxiv.org/abs/1905.12794) (Wu et al., CVPR 2021):
#   the image lists, the captions and how they were collected.
# - [NLVR2](https://github.com/lil-lab/nlvr): where CIRR's images come from, and the request form for them.
# - [CLIP4Cir](https://github.com/ABaldrati/CLIP4Cir): the code TargetPad and the FashionIQ caption joins
#   come from, which SPRC's training follows.
# - `data/README.md` in this repository: the full recipe for getting both datasets into this layout.
#
# **Next:** [02 BLIP-2 backbone](02_blip2_backbone.ipynb), the model that turns these images and texts into vectors.
