"""The toy track's shared artefacts, which `make course` and the notebooks reuse.

Everything here is cached on disk under the toy root: the toy data, the pretrained tiny BLIP-2, and one
trained tiny SPRC and one tiny SPRC² re-ranker per dataset. A notebook asks for what it needs and gets
it: copied from the weights shipped with the package when they fit the toy data (`shipped`), else trained.
"""

from __future__ import annotations

from pathlib import Path

from sprc_lib.course.shipped import copy_shipped
from sprc_lib.data.toy import generate_toy_data, is_complete
from sprc_lib.evaluation import chance, evaluation_context
from sprc_lib.evaluation.protocols import validation_stages
from sprc_lib.evaluation.rerank import Reranker, default_fuse, default_top_k
from sprc_lib.model import SPRCModel
from sprc_lib.model.loading import load_model, load_reranker
from sprc_lib.model.rerank import RerankerModel
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


def reranker_name(dataset: str) -> str:
    """The tiny re-ranker's run folder under runs/, and its shipped folder's name."""
    return f"{dataset}-reranker"


def tiny_reranker(dataset: str, root: str | Path | None = None, retrain: bool = False,
                  train_here: bool = False) -> tuple[RerankerModel, object]:
    """A tiny SPRC² re-ranker trained on toy `dataset` with the toy re-ranker recipe, validated by re-ordering
    the tiny SPRC's top K: copied from the shipped weights when they fit (unless `train_here`), else trained.

    The authors start the re-ranker from BLIP-2, whose ITM head BLIP-2 pretrained; the tiny BLIP-2 was
    pretrained without ITM, so the tiny re-ranker starts from the tiny SPRC instead, whose Q-Former has
    learned to read a caption with an image. Measured on toy CIRR val after 3 epochs, pure re-ranking of
    the top 20: R@1 9.0 started from the tiny SPRC, 5.7 from the tiny BLIP-2.
    """
    root = ensure_toy(root)
    tiny_model(dataset, root, train_here=train_here)  # stage 1: its rankings are what validation re-orders
    run = Path(root) / "runs" / reranker_name(dataset)
    missing = not (run / "best" / "config.json").is_file()
    if missing and not retrain and not train_here and copy_shipped(reranker_name(dataset), root, run / "best"):
        missing = False
    if retrain or missing:
        if (run / CHECKPOINT).is_file() and not retrain:
            resume_training(run)
        else:
            sprc = str(tiny_run_dir(dataset, root) / "best")
            train(TrainConfig(dataset=dataset, data_path=str(root), preset="tiny", output_dir=str(run), reranker=True,
                              model_path=sprc, stage1_model=sprc, num_workers=0, feature_cache=str(root / "cache"),
                              save_training=True, save_best=True))
    return load_reranker(run / "best").eval(), load_tokenizer(run / "best")


def evaluate_tiny(dataset: str, root: Path) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(SPRC's metrics, SPRC²'s, chance) of the trained tiny models on toy val: SPRC's ranking, then its top K
    re-ordered by the tiny re-ranker."""
    cache = root / "cache"
    ctx = evaluation_context(*tiny_model(dataset, root), device="cpu", feature_cache=cache)
    rerank_ctx = evaluation_context(*tiny_reranker(dataset, root), device="cpu", feature_cache=cache)
    reranker = Reranker(rerank_ctx, default_top_k(dataset, "tiny"), default_fuse("tiny"))
    sprc, sprc2 = validation_stages(ctx, dataset, root, reranker)
    return sprc, sprc2, chance(dataset, root)
