"""Stand-ins for what the full track downloads or asks the user for, at tiny sizes in the real formats.

`python tests/support/standins.py OUT` writes the authors' released files (`sprc_cirr.pt`, `sprc_fiq.pt`, LAVIS
layout and dtypes, from the trained tiny models) under OUT/checkpoints and prints, and writes to
OUT/full.env, the variables that point full mode at the stand-ins: the toy datasets (the real layouts; a copy that
lacks one FashionIQ image, as every real copy lacks some),
the tiny BLIP-2 (`Blip2ForImageTextRetrieval.save_pretrained` + a BertTokenizer with [DEC], as
`Salesforce/blip2-itm-vit-g` is laid out), the released files, the trained models and re-rankers, and a step bound.
`make test` runs every notebook a second time with them.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from sprc_lib.course.setup import SHORT
from sprc_lib.course.toy_track import ensure_toy, tiny_model, tiny_reranker
from sprc_lib.data import FashionIQDataset
from sprc_lib.data.schema import CIRR_DIR, FASHIONIQ_DIR
from sprc_lib.model.lavis import save_lavis_checkpoint
from sprc_lib.training.tiny_layout import TINY_BLIP2, model_folder, reranker_name

MAX_STEPS = 30  # training steps per run: every branch of the training code, in seconds at tiny sizes
MAX_QUERIES = 40  # queries notebook 07 re-ranks at the full track's top 200: its code paths, not its numbers


def data_missing_an_image(toy: Path, out: Path) -> Path:
    """The toy datasets hard-linked under `out`, less the first dress val query's target image: a real FashionIQ copy
    always lacks images, and full mode must go on without them (SPRC_SKIP_MISSING, on by default there)."""
    if out.exists():
        shutil.rmtree(out)
    for name in (CIRR_DIR, FASHIONIQ_DIR):
        shutil.copytree(toy / name, out / name, copy_function=os.link)
    for marker in (p for p in toy.iterdir() if p.is_file()):
        shutil.copy2(marker, out / marker.name)
    dress = FashionIQDataset(out, "val", ["dress"], "relative")
    dress.image_path(dress.triplets[0].target).unlink()
    return out


def build_standins(out: Path) -> dict[str, str]:
    """Write the released-file stand-ins under `out` and return the full-mode environment."""
    toy = ensure_toy()
    env = {"SPRC_MODE": "full", "SPRC_DATA": str(data_missing_an_image(toy, out / "data")),
           "SPRC_BLIP2": str(toy / TINY_BLIP2), "SPRC_MAX_STEPS": str(MAX_STEPS), "SPRC_MAX_QUERIES": str(MAX_QUERIES)}
    for dataset, short in SHORT.items():
        model, _ = tiny_model(dataset, toy)
        env[f"SPRC_{short.upper()}_CHECKPOINT"] = str(save_lavis_checkpoint(model, out / "checkpoints" /
                                                                          f"sprc_{short}.pt"))
        env[f"SPRC_{short.upper()}_MODEL"] = str(model_folder(dataset, toy))
        tiny_reranker(dataset, toy)
        env[f"SPRC_{short.upper()}_RERANKER"] = str(model_folder(reranker_name(dataset), toy))
    return env


if __name__ == "__main__":
    out = Path(sys.argv[1]).resolve()
    env = build_standins(out)
    lines = [f"{key}={value}" for key, value in env.items()]
    (out / "full.env").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
