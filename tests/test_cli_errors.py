"""The command line as a user meets it, on real-world mistakes: each one gets a short message naming the
file or flag and saying what to do, exit code 2, and no traceback; a run that never starts leaves no folder.

Every case runs the command line's `main(argv)` in this process, capturing what it prints and its exit code
(a subprocess per case spent most of its time importing torch). A few smoke tests at the end cross the real
process boundary: `python -m sprc_lib`'s exit code, `--debug`'s traceback, signals sent to a training.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from sprc_lib.cli import main
from sprc_lib.paths import checkout

pytestmark = pytest.mark.slow  # one fixture runs every case (half a minute): out of make test-fast

V = ["validate", "--preset", "tiny", "--num-workers", "0"]
T = ["train", "--dataset", "CIRR", "--preset", "tiny", "--model-path", "{blip}", "--num-workers", "0",
     "--output-dir", "{new}"]

# (id, arguments, exit code, what stderr must say, what must hold afterwards)
CASES = [
    # numbers and flags, checked before any work
    ("epochs 0", T + ["--data-path", "{toy}", "--num-epochs", "0"], 2, ["--num-epochs 0: must be at least 1"],
     "no run"),
    ("batch 0", T + ["--data-path", "{toy}", "--batch-size", "0"], 2, ["--batch-size 0"], "no run"),
    ("FashionIQ, 1 epoch", ["train", "--dataset", "FashionIQ", "--data-path", "{toy}", "--num-epochs", "1",
                            "--output-dir", "{new}"], 2, ["--num-epochs 1", "warms up for 1.5"], "no run"),
    ("rate 0", T + ["--data-path", "{toy}", "--learning-rate", "0"], 2, ["--learning-rate 0.0: must be above 0"], ""),
    ("unknown dataset", ["train", "--dataset", "COCO"], 2, ["--dataset must be CIRR or FashionIQ"], ""),
    ("save-best alone", T + ["--data-path", "{toy}", "--save-best"], 2, ["--save-best needs --save-training"], ""),
    ("ratio with squarepad", T + ["--data-path", "{toy}", "--transform", "squarepad", "--target-ratio", "1.3"], 2,
     ["--target-ratio only applies"], ""),
    ("no dataset", ["train", "--data-path", "{toy}"], 2, ["--dataset is required"], ""),
    ("other model name", T + ["--data-path", "{toy}", "--blip-model-name", "blip2_cir_cat"], 2,
     ["--blip-model-name blip2_cir_cat"], ""),
    ("batch above the data", T + ["--data-path", "{toy}", "--batch-size", "100000"], 2,
     ["--batch-size 100000", "too few for one batch"], "no run"),
    ("stop after 0 steps", T + ["--data-path", "{toy}", "--stop-after-steps", "0"], 2, ["--stop-after-steps 0"],
     "no run"),
    ("negative workers", T + ["--data-path", "{toy}", "--num-workers", "-1"], 2, ["--num-workers -1"], ""),
    ("unknown precision", T + ["--data-path", "{toy}", "--precision", "fp64"], 2, ["--precision", "invalid choice"],
     ""),
    ("unknown device", T + ["--data-path", "{toy}", "--device", "tpu"], 2, ["--device tpu"], "no run"),
    ("no GPU", T + ["--data-path", "{toy}", "--device", "cuda"], 2, ["--device cuda: no CUDA GPU"], "no run"),
    ("words for a number", T + ["--data-path", "{toy}", "--num-epochs", "many"], 2, ["--num-epochs",
                                                                                      "invalid int value"], ""),
    # paths that are not what they should be
    ("no data folder", T + ["--data-path", "{nowhere}"], 2, ["--data-path {nowhere}: no such folder"], "no run"),
    ("data path is a file", T + ["--data-path", "{file}"], 2, ["--data-path {file}: that is a file"], "no run"),
    ("no data folder, default preset", ["train", "--dataset", "CIRR", "--data-path", "{nowhere}"], 2,
     ["--data-path {nowhere}: no such folder"], ""),  # named at once, no model fetched from the hub
    ("a text file as weights", T + ["--data-path", "{toy}", "--model-path", "{file}"], 2,
     ["{file}: not a readable PyTorch checkpoint"], "no run"),
    ("resume a text file", ["train", "--resume", "{file}"], 2, ["{file}: not a readable PyTorch checkpoint"], ""),
    ("misspelled flag", T + ["--data-path", "{toy}", "--ouput-dir", "x"], 2,
     ["unrecognized arguments: --ouput-dir", "did you mean --output-dir?"], ""),
    ("negative rate in e-notation", T + ["--data-path", "{toy}", "--learning-rate", "-1e-3"], 2,
     ["--learning-rate -0.001: must be above 0"], ""),
    ("micro-batch above the batch", ["plan", "--preset", "tiny", "--batch-size", "32", "--micro-batch", "64"], 2,
     ["--micro-batch 64: must be below --batch-size 32"], ""),
    ("no initial weights", ["train", "--dataset", "CIRR", "--preset", "tiny", "--data-path", "{toy}",
                            "--model-path", "{nowhere}", "--output-dir", "{new}"], 2, ["{nowhere}", "no such file"],
     "no run"),
    ("weights folder is empty", ["train", "--dataset", "CIRR", "--preset", "tiny", "--data-path", "{toy}",
                                 "--model-path", "{empty}", "--output-dir", "{new}"], 2,
     ["{empty}", "not a saved SPRC model"], "no run"),
    ("output dir is a file", T[:-1] + ["{file}", "--data-path", "{toy}"], 2, ["{file}", "is a file"], ""),
    # damaged or incomplete datasets
    ("FashionIQ images missing", V + ["--dataset", "FashionIQ", "--data-path", "{fiq_missing}", "--model-path",
                                      "{model}"], 2, ["images are missing", "--skip-missing"], ""),
    ("unreadable image", V + ["--dataset", "CIRR", "--data-path", "{bad_image}", "--model-path", "{model}"], 2,
     ["cannot read image", "{bad_image}"], ""),
    ("annotations not JSON", V + ["--dataset", "CIRR", "--data-path", "{bad_json}", "--model-path", "{model}"], 2,
     ["cap.rc2.val.json is not valid JSON"], ""),
    ("FashionIQ target outside the split", V + ["--dataset", "FashionIQ", "--data-path", "{fiq_outside}",
                                                "--model-path", "{model}"], 2,
     ["cap.dress.val.json", "B00NOTINSPLIT", "not in split.dress.val.json"], ""),
    ("duplicate CIRR pair ids", ["cirr-submission", "--preset", "tiny", "--data-path", "{dup_pairs}",
                                 "--model-path", "{model}", "--num-workers", "0", "--output-dir", "{new}"], 2,
     ["cap.rc2.test1.json", "repeats the pair id"], "no run"),
    ("submission into a file", ["cirr-submission", "--preset", "tiny", "--data-path", "{toy}", "--model-path",
                                "{model}", "--output-dir", "{file}"], 2, ["--output-dir {file}", "is a file"], ""),
    # models and checkpoints that are not what they claim
    ("no model path", V + ["--dataset", "CIRR", "--data-path", "{toy}"], 2, ["--model-path is required"], ""),
    ("model path nowhere", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path", "{nowhere}"], 2,
     ["--model-path {nowhere}: no such file or folder"], ""),
    ("model path is a data folder", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path", "{toy}"], 2,
     ["not a saved model"], ""),
    ("garbage .pt", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path", "{garbage}", "--tokenizer",
                         "{model}"], 2, ["{garbage}", "not a readable PyTorch checkpoint"], ""),
    ("pickle with code", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path", "{evil}", "--tokenizer",
                              "{model}"], 2, ["{evil}", "refused"], "not run"),
    ("broken config.json", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path", "{broken_model}"], 2,
     ["config.json", "not a valid model config"], ""),
    ("released file lacks a tensor", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path", "{cut}",
                                          "--tokenizer", "{model}"], 2, ["{cut}", "does not fit", "missing (1)"], ""),
    ("tiny model without tokenizer", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path", "{lavis}"],
     2, ["no tokenizer beside it", "--tokenizer"], ""),
    ("convert a missing file", ["convert", "--lavis-checkpoint", "{nowhere}", "--out", "{new}", "--preset", "tiny",
                                "--tokenizer", "{model}"], 2, ["{nowhere}", "no such checkpoint file"], "no run"),
    ("convert a run checkpoint", ["convert", "--lavis-checkpoint", "{run}/checkpoint.pt", "--out", "{new}",
                                  "--preset", "tiny", "--tokenizer", "{model}"], 2, ["expected a state dict"], ""),
    ("bad batch size to validate", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path", "{model}",
                                        "--batch-size", "0"], 2, ["--batch-size 0"], ""),
    # resuming
    ("resume nothing", ["train", "--resume", "{nowhere}"], 2, ["--resume {nowhere}: no such folder"], ""),
    ("resume a model folder", ["train", "--resume", "{model}"], 2, ["a saved model, not a run folder",
                                                                     "--model-path {model}"], ""),
    ("resume a released file", ["train", "--resume", "{lavis}"], 2, ["not a training checkpoint"], ""),
    ("resume with a fixed setting", ["train", "--resume", "{run}", "--learning-rate", "1"], 2,
     ["--learning-rate 1.0 (the run has", "start a new run"], "run kept"),
    ("resume and overwrite", ["train", "--resume", "{run}", "--overwrite"], 2, ["--overwrite replaces a run"], ""),
    ("new run into an old one", T[:-1] + ["{run}", "--data-path", "{toy}"], 2,
     ["already holds a run", "--resume {run}", "--overwrite"], "run kept"),
    # late failures: saved where possible, named in any case
    ("diverging loss", T + ["--data-path", "{toy}", "--num-epochs", "1", "--loss-rtc", "1e39"], 2,
     ["the loss is", "diverged", "--learning-rate"], ""),
    ("unreadable training image", T + ["--data-path", "{bad_train}", "--num-epochs", "1"], 2,
     ["cannot read image", "Progress is saved", "--resume"], "checkpoint"),
    # the same mistakes met by a data-loading worker: the same one line
    ("unreadable image, in a worker", V + ["--dataset", "CIRR", "--data-path", "{bad_image}", "--model-path",
                                           "{model}", "--num-workers", "2"], 2, ["cannot read image", "{bad_image}"],
     "one line"),
    ("unreadable training image, in a worker", T + ["--data-path", "{bad_train}", "--num-epochs", "1",
                                                    "--num-workers", "2"], 2,
     ["cannot read image", "Progress is saved", "--resume"], "checkpoint"),
    # weights that load but are not what they should be
    ("NaN weights", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path", "{nan_model}"], 2,
     ["{nan_model}: tensor prompt_tokens holds 1 NaN or infinite value(s)"], ""),
    ("pickle in pytorch_model.bin", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path", "{bin_model}"],
     2, ["{bin_model}/pytorch_model.bin: holds Python objects", "refused"], "not run"),
    ("convert without the tiny tokenizer", ["convert", "--lavis-checkpoint", "{lavis}", "--out", "{new}", "--preset",
                                            "tiny"], 2, ["{lavis}: its vocabulary has", "pass --tokenizer"], "no run"),
    # destinations that hold someone's work: nothing is written over or deleted without --overwrite
    ("new run into saved models", T[:-1] + ["{models_only}", "--data-path", "{toy}"], 2,
     ["--output-dir {models_only} already holds a run (best/, final/, train_metrics.csv", "--overwrite"],
     "models kept"),
    ("new run into best/ alone", T[:-1] + ["{best_only}", "--data-path", "{toy}"], 2,
     ["--output-dir {best_only} already holds a run (best/)"], "models kept"),
    ("new run beside other files", T[:-1] + ["{notes}", "--data-path", "{toy}"], 2,
     ["--output-dir {notes} already holds files no run wrote (notes.txt)"], "notes kept"),
    ("convert onto a model folder", ["convert", "--lavis-checkpoint", "{lavis}", "--out", "{model_copy}", "--preset",
                                     "tiny", "--tokenizer", "{model}"], 2,
     ["--out {model_copy} already holds files", "--overwrite"], "model kept"),
    ("convert onto a file", ["convert", "--lavis-checkpoint", "{lavis}", "--out", "{file}", "--preset", "tiny",
                             "--tokenizer", "{model}"], 2, ["--out {file}: that is a file"], ""),
    ("convert over other files", ["convert", "--lavis-checkpoint", "{lavis}", "--out", "{notes}", "--preset", "tiny",
                                  "--tokenizer", "{model}", "--overwrite"], 2,
     ["--out {notes}: --overwrite replaces a model folder"], "notes kept"),
    ("submission over an earlier one", ["cirr-submission", "--preset", "tiny", "--data-path", "{toy}", "--model-path",
                                        "{model}", "--num-workers", "0", "--output-dir", "{submitted}",
                                        "--submission-name", "x"], 2,
     ["--output-dir {submitted} already holds recall_submission_x.json", "--overwrite"], ""),
    ("toy data onto a file", ["toy-data", "--out", "{file}"], 2, ["--out {file}: that is a file"], ""),
    ("toy data over other captions", ["toy-data", "--out", "{foreign_corpus}"], 2,
     ["pretraining_captions.json that toy-data did not write"], ""),
    # what a run is, by content
    ("resume on other data", ["train", "--resume", "{run}", "--data-path", "{fewer_triplets}"], 2,
     ["--data-path {fewer_triplets}: not the data this run was trained on",
      "cirr_dataset/cirr/captions/cap.rc2.train.json: 100 records, the run's"], "run kept"),
    ("resume on data of the same size", ["train", "--resume", "{run}", "--data-path", "{other_captions}"], 2,
     ["not the data this run was trained on", "as many as the run's, other contents"], "run kept"),
    ("resume from other weights", ["train", "--resume", "{run}", "--model-path", "{model}"], 2,
     ["--model-path {model}: not the weights this run started from"], "run kept"),
]
# check-data reports every problem of a copy (exit 1), including what validate and the submission would meet.
CHECKS = [
    ("check-data: duplicate pair ids", ["check-data", "--dataset", "CIRR", "--data-path", "{dup_pairs}"],
     ["cap.rc2.test1.json", "repeats the pair id"]),
    ("check-data: target outside the split", ["check-data", "--dataset", "FashionIQ", "--data-path",
                                              "{fiq_outside}"], ["B00NOTINSPLIT", "not in split.dress.val.json"]),
    ("check-data: missing images", ["check-data", "--dataset", "FashionIQ", "--data-path", "{fiq_missing}"],
     ["MISSING IMAGES", "--skip-missing would drop"]),
    ("check-data: unreadable image", ["check-data", "--dataset", "CIRR", "--data-path", "{bad_image}",
                                      "--verify-images"], ["unreadable image(s)"]),
]
# Cases that must succeed, as the controls of the ones above.
GOOD = [
    ("validate into a new, empty feature cache", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path",
                                                      "{model}", "--feature-cache", "{new}"], ["recall_at1"]),
    ("resume a copied run where it now is", ["train", "--resume", "{copied}", "--stop-after-steps", "1",
                                             "--num-workers", "0"], ["run folder: {copied}"]),
    ("skip the missing FashionIQ images", V + ["--dataset", "FashionIQ", "--data-path", "{fiq_missing}",
                                              "--model-path", "{model}", "--skip-missing"],
     ["average_recall_at10", "FashionIQ val dress: computed without 4 of", "images"]),
    ("validate a run's checkpoint", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path",
                                        "{run}/checkpoint.pt"], ["recall_at1"]),
    ("replace a run on purpose", T[:-1] + ["{overwritten}", "--data-path", "{toy}", "--overwrite",
                                          "--stop-after-steps", "1"], ["run folder: {overwritten}"]),
    ("resume with the starting weights moved", ["train", "--resume", "{copied}", "--model-path", "{blip_moved}",
                                                "--stop-after-steps", "1", "--num-workers", "0"],
     ["run folder: {copied}"]),
    ("replace a converted model on purpose", ["convert", "--lavis-checkpoint", "{lavis}", "--out", "{model_replaced}",
                                              "--preset", "tiny", "--tokenizer", "{model}", "--overwrite"],
     ["converted", "{model_replaced}"]),
]


def toy_copy(toy_root: Path, dst: Path) -> Path:
    shutil.copytree(toy_root, dst, copy_function=os.link)  # images are hard links: replace, never write into
    return dst


def rewrite(path: Path, change) -> None:
    data = change(json.loads(path.read_text()))
    path.unlink()  # a hard link to the session's toy data
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def places(toy_root: Path, tiny_blip2: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_places(toy_root, tiny_blip2, tmp_path_factory.mktemp("cli-errors"))


def make_places(toy_root: Path, tiny_blip2: Path, base: Path) -> dict[str, str]:
    """Everything the cases name: toy copies with one defect each, models, checkpoints, files."""
    from sprc_lib.data.cirr import CIRRDataset
    from sprc_lib.model.lavis import LAVIS_MODEL_KEY, save_lavis_checkpoint
    from sprc_lib.model.loading import load_model
    from sprc_lib.model.tokenizer import load_tokenizer
    from sprc_lib.training.config import TrainConfig
    from sprc_lib.training.recipes import TOY
    from sprc_lib.training.sampler import EpochBatchSampler
    from sprc_lib.training.trainer import train

    model = load_model(tiny_blip2)
    model.save_pretrained(base / "model")
    load_tokenizer(tiny_blip2).save_pretrained(base / "model")
    save_lavis_checkpoint(model, base / "sprc_tiny.pt")
    cut = torch.load(base / "sprc_tiny.pt", weights_only=True)
    del cut[LAVIS_MODEL_KEY]["prompt_tokens"]
    torch.save(cut, base / "cut.pt")
    (base / "garbage.pt").write_bytes(os.urandom(4096))

    (base / "evil.pt").write_bytes(pickle.dumps({"model": Evil()}, protocol=2))  # torch.save's protocol
    shutil.copytree(base / "model", base / "broken_model")
    (base / "broken_model" / "config.json").write_text("{")
    (base / "empty").mkdir()
    (base / "a_file").write_text("not a folder")
    train(TrainConfig(dataset="CIRR", data_path=str(toy_root), model_path=str(tiny_blip2), output_dir=str(base / "run"),
                      num_workers=0), stop_after_steps=1)
    shutil.copytree(base / "run", base / "overwritten")
    shutil.copytree(base / "run", base / "copied")

    fiq = toy_copy(toy_root, base / "fiq_missing") / "fashionIQ_dataset"
    for name in json.loads((fiq / "image_splits" / "split.dress.val.json").read_text())[:4]:
        (fiq / "images" / f"{name}.png").unlink()
    outside = toy_copy(toy_root, base / "fiq_outside") / "fashionIQ_dataset" / "captions" / "cap.dress.val.json"
    rewrite(outside, lambda records: [{**records[0], "target": "B00NOTINSPLIT"}, *records[1:]])
    dup = toy_copy(toy_root, base / "dup_pairs") / "cirr_dataset" / "cirr" / "captions" / "cap.rc2.test1.json"
    rewrite(dup, lambda records: [*records, records[3]])
    bad_json = toy_copy(toy_root, base / "bad_json") / "cirr_dataset" / "cirr" / "captions" / "cap.rc2.val.json"
    text = bad_json.read_text()
    bad_json.unlink()
    bad_json.write_text(text[: len(text) // 2])
    # A damaged val image, and a damaged training image that the second step of a seed-0 run reads (met early,
    # after a step whose progress the run saves).
    train = CIRRDataset(toy_root, "train", "relative")
    second_step = list(EpochBatchSampler(len(train), TOY["CIRR"].batch_size, seed=0))[1]
    for folder, split, name in (("bad_image", "val", None), ("bad_train", "train",
                                                             train.triplets[second_step[0]].reference)):
        cirr = toy_copy(toy_root, base / folder) / "cirr_dataset"
        paths = json.loads((cirr / "cirr" / "image_splits" / f"split.rc2.{split}.json").read_text())
        relpath = paths[name] if name else next(iter(paths.values()))
        (cirr / relpath).unlink()
        (cirr / relpath).write_bytes(b"\x89PNG but not really")
    places_of_work(toy_root, tiny_blip2, base)
    return {"toy": str(toy_root), "blip": str(tiny_blip2), "model": str(base / "model"),
            "lavis": str(base / "sprc_tiny.pt"), "cut": str(base / "cut.pt"), "garbage": str(base / "garbage.pt"),
            "evil": str(base / "evil.pt"), "broken_model": str(base / "broken_model"), "empty": str(base / "empty"),
            "file": str(base / "a_file"), "run": str(base / "run"), "overwritten": str(base / "overwritten"),
            "copied": str(base / "copied"),
            "nowhere": str(base / "nowhere" / "at_all"),
            **{name: str(base / name) for name in ("fiq_missing", "fiq_outside", "dup_pairs", "bad_json",
                                                   "bad_image", "bad_train", *WORK)}}


# Folders holding someone's work, damaged weights, and other data, for the cases above.
WORK = ("models_only", "best_only", "notes", "model_copy", "model_replaced", "submitted", "foreign_corpus",
        "fewer_triplets", "other_captions", "blip_moved", "nan_model", "bin_model", "full_disk")


def places_of_work(toy_root: Path, tiny_blip2: Path, base: Path) -> None:
    from safetensors.torch import load_file, save_file

    shutil.copytree(base / "run", base / "full_disk")
    for name in ("models_only", "best_only"):
        shutil.copytree(base / "model", base / name / "best")
    shutil.copytree(base / "model", base / "models_only" / "final")
    for csv in ("train_metrics.csv", "validation_metrics.csv"):
        (base / "models_only" / csv).write_text("epoch,loss\n0,1.0\n")
    (base / "notes").mkdir()
    (base / "notes" / "notes.txt").write_text("my notes")
    shutil.copytree(base / "model", base / "model_copy")
    shutil.copytree(base / "model", base / "model_replaced")
    (base / "model_replaced" / "training_info.json").write_text("{}")
    (base / "submitted").mkdir()
    (base / "submitted" / "recall_submission_x.json").write_text("{}")
    (base / "foreign_corpus").mkdir()
    (base / "foreign_corpus" / "pretraining_captions.json").write_text("[]")
    for name, change in (("fewer_triplets", lambda records: records[:100]),
                         ("other_captions", lambda records: [{**records[0], "caption": "other"}, *records[1:]])):
        shutil.copytree(toy_root / "cirr_dataset", base / name / "cirr_dataset", copy_function=os.link)
        rewrite(base / name / "cirr_dataset" / "cirr" / "captions" / "cap.rc2.train.json", change)
    shutil.copytree(tiny_blip2, base / "blip_moved")
    shutil.copytree(base / "model", base / "nan_model")
    weights = load_file(base / "model" / "model.safetensors")
    weights["prompt_tokens"][0, 0, 0] = float("nan")
    (base / "nan_model" / "model.safetensors").unlink()
    save_file(weights, base / "nan_model" / "model.safetensors", metadata={"format": "pt"})
    shutil.copytree(base / "model", base / "bin_model")
    (base / "bin_model" / "model.safetensors").unlink()
    (base / "bin_model" / "pytorch_model.bin").write_bytes(pickle.dumps({"model": Evil()}, protocol=2))


class Evil:
    """A pickle that runs code when loaded."""

    def __reduce__(self):
        return (print, ("this ran",))


def fill(args: list[str], places: dict[str, str], new: Path) -> list[str]:
    return [a.format(**places, new=new) for a in args]


def run_subprocess(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sprc_lib", *args], cwd=checkout(), capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@dataclass
class Outcome:
    """What one command printed and returned, as a person at a terminal would see it."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(args: list[str]) -> Outcome:
    """`python -m sprc_lib ARGS`, run in this process: argparse's exits and `main`'s return code both count."""
    out, err = io.StringIO(), io.StringIO()
    showwarning = warnings.showwarning  # main() prints warnings as one line; the test process keeps its own
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        try:
            code = main(args)
        except SystemExit as stop:  # argparse: usage errors (2) and --help (0)
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        except Exception:  # an error main() does not handle: the traceback and exit code 1, as from a real process
            traceback.print_exc()
            code = 1
        finally:
            warnings.showwarning = showwarning
    return Outcome(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def outcomes(places: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Every case run once: (its outcome, its fresh output path, the run's checkpoint mtime before and after)."""
    fresh = tmp_path_factory.mktemp("fresh")
    checkpoint = Path(places["run"]) / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    done = {}
    for i, (name, args, *_) in enumerate(CASES + CHECKS + GOOD):
        done[name] = (run_cli(fill(args, places, fresh / f"case{i}")), fresh / f"case{i}")
    return {name: (outcome, new, before, checkpoint.stat().st_mtime_ns) for name, (outcome, new) in done.items()}


PROGRESS = re.compile(r"\| *\d+/\d+ \[")  # a progress bar's "| 97/97 ["


@pytest.mark.parametrize(("name", "args", "code", "says", "after"), CASES, ids=[c[0] for c in CASES])
def test_a_mistake_gets_one_clear_message(name, args, code, says, after, outcomes, places):
    done, new, before, now = outcomes[name]
    assert done.returncode == code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    for text in says:
        assert text.format(**places) in done.stderr, (text, done.stderr[-2000:])
    message = [line for line in done.stderr.splitlines() if line.startswith(("error:", "usage:"))]
    assert message, done.stderr[-2000:]
    if after == "no run":
        assert not new.exists(), f"{new} was created by a run that never started"
    if after == "run kept":
        assert now == before, "the existing run's checkpoint was rewritten"
    if after == "not run":
        assert "this ran" not in done.stdout + done.stderr
    if after == "checkpoint":
        assert (new / "checkpoint.pt").is_file()
    if after == "one line":  # what stays on the screen, progress bars aside (each line's text after their \r)
        shown = [line.rsplit("\r", 1)[-1] for line in done.stderr.split("\n")]
        assert [line for line in shown if line.strip() and not PROGRESS.search(line)] == message, done.stderr[-3000:]
    if after == "models kept":
        assert (Path(places[args[args.index("--output-dir") + 1].strip("{}")]) / "best" / "config.json").is_file()
    if after == "notes kept":
        assert (Path(places["notes"]) / "notes.txt").read_text() == "my notes"
        assert sorted(p.name for p in Path(places["notes"]).iterdir()) in (["notes.txt"], [".lock", "notes.txt"])
    if after == "model kept":
        assert (Path(places["model_copy"]) / "config.json").read_bytes() == (Path(places["model"]) /
                                                                          "config.json").read_bytes()


@pytest.mark.parametrize(("name", "args", "says"), CHECKS, ids=[c[0] for c in CHECKS])
def test_check_data_finds_what_the_commands_would_trip_on(name, args, says, outcomes, places):
    done, *_ = outcomes[name]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    for text in says:
        assert text.format(**places) in done.stdout, (text, done.stdout[-2000:])


@pytest.mark.parametrize(("name", "args", "says"), GOOD, ids=[c[0] for c in GOOD])
def test_the_controls_succeed(name, args, says, outcomes, places):
    done, *_ = outcomes[name]
    assert done.returncode == 0, done.stderr[-3000:]
    for text in says:
        assert text.format(**places) in done.stdout, (text, done.stdout[-2000:])


def deny_reading(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Files called `name` cannot be opened, as when their permissions leave this user out (root reads anything)."""
    real = Path.open

    def guarded(self: Path, *args, **kwargs):
        if self.name == name:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded)


def fill_the_disk(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """torch.save fails as on a full disk (half a file, then its zip writer's error), with no space left."""

    def save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))


def stop_saving_the_tokenizer(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Ctrl-C while a tokenizer is written (after the model's weights)."""
    from transformers import BertTokenizer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(BertTokenizer, "save_pretrained", interrupted)


# Cases where the machine misbehaves: (id, arguments, what goes wrong, exit code, what stderr must say).
# check-data reports a problem in its table on stdout (exit 1); the other commands stop with one line.
MACHINE = [
    ("caption file unreadable: check-data", ["check-data", "--dataset", "CIRR", "--data-path", "{toy}"],
     (deny_reading, "cap.rc2.val.json"), 1, ["cannot read CIRR caption file", "cap.rc2.val.json (Permission denied)"]),
    ("caption file unreadable: validate", V + ["--dataset", "CIRR", "--data-path", "{toy}", "--model-path", "{model}"],
     (deny_reading, "cap.rc2.val.json"), 2, ["cannot read CIRR caption file", "chmod u+r"]),
    ("caption file unreadable: train", T + ["--data-path", "{toy}"], (deny_reading, "cap.rc2.train.json"), 2,
     ["cannot read CIRR caption file", "cap.rc2.train.json (Permission denied)"]),
    ("disk full while saving", ["train", "--resume", "{full_disk}", "--stop-after-steps", "1", "--num-workers", "0"],
     (fill_the_disk, ""), 2, ["{full_disk}: the disk is full (0.0 MB free) while writing checkpoint.pt, which needs "
                              "about", "The last complete checkpoint stands: continue with --resume {full_disk}"]),
    ("convert interrupted", ["convert", "--lavis-checkpoint", "{lavis}", "--out", "{new}", "--preset", "tiny",
                             "--tokenizer", "{model}"], (stop_saving_the_tokenizer, ""), 130, ["interrupted"]),
]


@pytest.mark.parametrize(("name", "args", "trouble", "code", "says"), MACHINE, ids=[c[0] for c in MACHINE])
def test_a_machine_fault_gets_one_clear_message(name, args, trouble, code, says, places, tmp_path, monkeypatch):
    checkpoint = Path(places["full_disk"]) / "checkpoint.pt"
    before = checkpoint.read_bytes()
    make_trouble, target = trouble
    make_trouble(monkeypatch, target)
    done = run_cli(fill(args, places, tmp_path / "new"))
    monkeypatch.undo()
    assert done.returncode == code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    for text in says:
        assert text.format(**places) in (done.stdout if code == 1 else done.stderr), (text, done.stderr[-2000:])
    if code == 2:
        assert [line for line in done.stderr.splitlines() if line.startswith("error:")], done.stderr[-2000:]
    assert checkpoint.read_bytes() == before  # the last checkpoint stands
    assert not list(tmp_path.glob("new*"))  # nothing half written, not even beside the destination


def test_a_replaced_model_keeps_nothing_of_the_old_one(outcomes, places):
    """`convert --overwrite` replaces the folder whole: no old training_info.json beside the new weights."""
    assert outcomes["replace a converted model on purpose"][0].returncode == 0
    assert sorted(p.name for p in Path(places["model_replaced"]).iterdir()) == sorted(
        p.name for p in Path(places["model"]).iterdir())


def test_a_mistake_exits_2_from_a_real_process(places):
    done = run_subprocess(V + ["--dataset", "CIRR", "--data-path", places["toy"], "--model-path", places["nowhere"]])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: --model-path {places['nowhere']}: no such file or folder" in done.stderr


def test_debug_shows_the_traceback(places):
    done = run_subprocess(V + ["--dataset", "CIRR", "--data-path", places["toy"], "--model-path", places["nowhere"],
                               "--debug"])
    assert done.returncode == 1 and "Traceback" in done.stderr and "MissingFileError" in done.stderr


def start_training(places: dict[str, str], out: Path, *extra: str) -> subprocess.Popen:
    """A training in its own process group (as a scheduler or a notebook's kernel starts one)."""
    argv = fill(T + ["--data-path", "{toy}", "--batch-size", "8", *extra], places, out)
    return subprocess.Popen([sys.executable, "-m", "sprc_lib", *argv], cwd=checkout(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_steps(process: subprocess.Popen, out: Path) -> None:
    """Until the run is training (its folder written: the lock is held, the first steps run)."""
    deadline = time.monotonic() + 300
    while not (out / "training_hyperparameters.json").is_file() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)


def test_two_trainings_into_one_folder_at_once(places, tmp_path):
    out = tmp_path / "run"
    first = start_training(places, out)
    wait_for_steps(first, out)
    second = run_subprocess(fill(T + ["--data-path", "{toy}", "--overwrite"], places, out))
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=300)
    assert second.returncode == 2 and "another training run is writing this folder" in second.stderr
    assert "Traceback" not in second.stderr


@pytest.mark.parametrize(("signum", "code", "group"), [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, False),
                                                      (signal.SIGTERM, 143, True)],
                         ids=["ctrl-c", "term", "term to the group, with workers"])
def test_a_stopped_run_saves_says_how_to_resume_and_exits_quietly(places, tmp_path, signum, code, group):
    """A signal to the process group reaches the data-loading workers too: they leave it to the main process."""
    out = tmp_path / "run"
    process = start_training(places, out, *(["--num-workers", "2"] if group else []))
    wait_for_steps(process, out)
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    assert f"Stopped ({signal.Signals(signum).name})" in stdout and f"--resume {out}" in stdout
    assert (out / "checkpoint.pt").is_file()
