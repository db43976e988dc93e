"""The toy track's shared artefacts, which `make course` and the notebooks reuse.

Everything here is cached on disk under the toy root: the toy data, the pretrained tiny BLIP-2, and
one trained tiny SPRC per dataset. A notebook asks for what it needs and gets it: copied from the
weights shipped with the package when they fit the toy data (`shipped`), else trained.
"""

from __future__ import annotations

from pathlib import Path

from sprc_lib.course.shipped import copy_shipped
from sprc_lib.data.toy import generate_toy_data, is_complete
from sprc_lib.evaluation import chance, evaluation_context, validate
from sprc_lib.model import SPRCModel
from sprc_lib.model.loading import load_model
from sprc_lib.model.tokenizer import load_tokenizer
from sprc_lib.paths import toy_root
from sprc_lib.training.config import TrainConfig
from sprc_lib.training.pretrain import TINY_BLIP2, pretrain_tiny_blip2
from sprc_lib.training.runs import CHECKPOINT
from sprc_lib.training.trainer import resume_training, train


def ensure_toy(root: str | Path | None = None) -> Path:
    """The toy datasets and the pretrained tiny BLIP-2 under `root` (default data/toy), made if missing."""
    root = Path(root) if root else toy_root()
    if not is_complete(root):
        generate_toy_data(root)
    if not (root / TINY_BLIP2 / "config.json").is_file() and not copy_shipped(TINY_BLIP2, root, root / TINY_BLIP2):
        pretrain_tiny_blip2(root, root / TINY_BLIP2)
    return root


def tiny_run_dir(dataset: str, root: str | Path | None = None) -> Path:
    return (Path(root) if root else toy_root()) / "runs" / dataset


def tiny_model(dataset: str, root: str | Path | None = None, retrain: bool = False,
               train_here: bool = False) -> tuple[SPRCModel, object]:
    """A tiny SPRC trained on toy `dataset` with the toy recipe: on first use copied from the shipped weights
    when they fit this toy data (unless `train_here`), else trained; then reused."""
    root = ensure_toy(root)
    run = tiny_run_dir(dataset, root)
    missing = not (run / "best" / "config.json").is_file()
    if missing and not retrain and not train_here and copy_shipped(dataset, root, run / "best"):
        missing = False
    if retrain or missing:
        if (run / CHECKPOINT).is_file() and not retrain:
            resume_training(run)
        else:
            train(TrainConfig(dataset=dataset, data_path=str(root), preset="tiny", output_dir=str(run),
                              num_workers=0, feature_cache=str(root / "cache"), save_training=True, save_best=True))
    return load_model(run / "best").eval(), load_tokenizer(run / "best")


def evaluate_tiny(dataset: str, root: Path) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, chance) of the trained tiny model on toy val."""
    ctx = evaluation_context(*tiny_model(dataset, root), device="cpu", feature_cache=root / "cache")
    return validate(ctx, dataset, root), chance(dataset, root)
