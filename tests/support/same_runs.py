"""Three short tiny trainings whose weights and metrics a refactoring of the training path must not change.

    python tests/support/same_runs.py record DIR    # train them, keep their weights and metrics in DIR
    python tests/support/same_runs.py compare DIR   # train them again, compare with DIR bit for bit

A CIRR run crosses an epoch end and the validation after it, a FashionIQ run trains its three categories, and a
re-ranker run validates by re-ordering the CIRR run's top K. One machine, one thread, the same seed: every
tensor must be `torch.equal` and every metric equal. Not part of `make test` (minutes); run it around a change.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from sprc_lib.course.toy_track import ensure_toy
from sprc_lib.paths import toy_root
from sprc_lib.training.config import TrainConfig
from sprc_lib.training.tiny_layout import TINY_BLIP2, model_folder
from sprc_lib.training.trainer import train


def runs(work: Path) -> dict[str, tuple[dict, list[dict]]]:
    """{name: (state dict, validation rows)} of the three runs, trained under `work`."""
    root = ensure_toy(toy_root())
    blip = str(model_folder(TINY_BLIP2, root))
    common = {"data_path": str(root), "preset": "tiny", "num_workers": 0, "seed": 3, "num_epochs": 2}
    configs = {
        "CIRR": TrainConfig(dataset="CIRR", model_path=blip, batch_size=64, output_dir=str(work / "cirr"), **common),
        "FashionIQ": TrainConfig(dataset="FashionIQ", model_path=blip, batch_size=64, output_dir=str(work / "fiq"),
                                 **common),
        "reranker": TrainConfig(dataset="CIRR", reranker=True, model_path=str(model_folder("CIRR", root)),
                                stage1_model=str(model_folder("CIRR", root)), batch_size=64,
                                output_dir=str(work / "reranker"), **common),
    }
    stops = {"CIRR": None, "FashionIQ": 20, "reranker": 40}
    out = {}
    for name, config in configs.items():
        result = train(config, stop_after_steps=stops[name])
        out[name] = ({k: v.clone() for k, v in result.model.state_dict().items()}, result.val_history)
    return out


def main(argv: list[str]) -> int:
    action, folder = argv[0], Path(argv[1])
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        found = runs(Path(work))
    if action == "record":
        folder.mkdir(parents=True, exist_ok=True)
        for name, (weights, rows) in found.items():
            torch.save(weights, folder / f"{name}.pt")
            (folder / f"{name}.json").write_text(json.dumps(rows, indent=1))
        print(f"recorded {', '.join(found)} in {folder}")
        return 0
    bad = []
    for name, (weights, rows) in found.items():
        before = torch.load(folder / f"{name}.pt", weights_only=True)
        if before.keys() != weights.keys():
            bad.append(f"{name}: other tensors ({sorted(set(before) ^ set(weights))[:5]})")
        bad += [f"{name}: {key} differs" for key in before if key in weights and not torch.equal(before[key],
                                                                                                   weights[key])]
        if json.loads((folder / f"{name}.json").read_text()) != json.loads(json.dumps(rows)):
            bad.append(f"{name}: validation metrics differ")
        print(f"{name}: {len(before)} tensors compared")
    print("\n".join(bad) or "identical: every tensor and every validation metric")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
