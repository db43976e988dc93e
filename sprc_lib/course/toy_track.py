"""The toy track's shared artefacts, which `make course` and the notebooks reuse.

Everything here lives on disk under the toy root: the toy data, the pretrained tiny BLIP-2, and one tiny
SPRC and one tiny SPRC² re-ranker per dataset. A notebook asks for what it needs and gets the weights
shipped with the package (`shipped`), the course's reference: the same on every machine, so everyone
sees the same numbers. Only toy data the shipped weights were not trained on (another seed or size) is
trained on here. `retrain_toy_track` (`make models RETRAIN=1`) trains them all again on this machine: a
local retraining, whose numbers differ from the reference's within the band `reference.py` measures.
"""

from __future__ import annotations

from pathlib import Path

from sprc_lib.course.shipped import copy_shipped, is_shipped
from sprc_lib.data.schema import DATASETS
from sprc_lib.data.toy import generate_toy_data, is_complete
from sprc_lib.evaluation import EvalSettings, chance, make_eval_context
from sprc_lib.evaluation.context import EvalContext
from sprc_lib.evaluation.protocols import validation_stages
from sprc_lib.evaluation.rerank import Reranker, default_fuse, default_top_k
from sprc_lib.model import SPRCModel
from sprc_lib.model.loading import load_model, load_reranker
from sprc_lib.model.rerank import RerankerModel
from sprc_lib.model.tokenizer import load_tokenizer
from sprc_lib.paths import toy_root
from sprc_lib.training.config import TrainConfig
from sprc_lib.training.pretrain import pretrain_tiny_blip2
from sprc_lib.training.runs import CHECKPOINT
from sprc_lib.training.tiny_layout import TINY_BLIP2, model_folder, model_names, reranker_name, run_dir
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
    """The run folder of the tiny SPRC of `dataset` under `root` (default data/toy)."""
    return run_dir(dataset, root or toy_root())


def _train_tiny(dataset: str, root: Path, reranker: bool, seed: int = 0) -> None:
    """Train one tiny model into its run folder with the toy recipe, replacing any run there.

    The authors start the re-ranker from BLIP-2, whose ITM head BLIP-2 pretrained; the tiny BLIP-2 was
    pretrained without ITM, so the tiny re-ranker starts from the tiny SPRC instead, whose Q-Former has
    learned to read a caption with an image (on toy CIRR val, its pure re-ranking scored clearly higher
    started from the tiny SPRC than from the tiny BLIP-2).
    """
    sprc = str(model_folder(dataset, root))
    run = run_dir(reranker_name(dataset) if reranker else dataset, root)
    extra = {"reranker": True, "model_path": sprc, "stage1_model": sprc} if reranker else {}
    train(TrainConfig(dataset=dataset, data_path=str(root), preset="tiny", output_dir=str(run), num_workers=0,
                      feature_cache=str(root / "cache"), save_training=True, save_best=True, seed=seed, **extra),
          overwrite=True)


def _ensure_trained(name: str, dataset: str, root: Path, reranker: bool) -> Path:
    """The folder of tiny model `name`: the shipped copy when the shipped weights fit this toy data; else trained
    here (a stopped training resumed)."""
    run, folder = run_dir(name, root), model_folder(name, root)
    if not (folder / "config.json").is_file() and not copy_shipped(name, root, folder):
        if (run / CHECKPOINT).is_file():
            resume_training(run)
        else:
            _train_tiny(dataset, root, reranker)
    return folder


def tiny_model(dataset: str, root: str | Path | None = None) -> tuple[SPRCModel, object]:
    """The tiny SPRC of toy `dataset` and its tokenizer (the shipped weights when they fit this toy data)."""
    root = ensure_toy(root)
    folder = _ensure_trained(dataset, dataset, root, reranker=False)
    return load_model(folder).eval(), load_tokenizer(folder)


def tiny_reranker(dataset: str, root: str | Path | None = None) -> tuple[RerankerModel, object]:
    """The tiny SPRC² re-ranker of toy `dataset` and its tokenizer (the shipped weights when they fit), validated
    in training by re-ordering the tiny SPRC's top K."""
    root = ensure_toy(root)
    tiny_model(dataset, root)  # stage 1: its rankings are what validation re-orders
    folder = _ensure_trained(reranker_name(dataset), dataset, root, reranker=True)
    return load_reranker(folder).eval(), load_tokenizer(folder)


def ensure_models(root: str | Path | None = None) -> list[str]:
    """`make models`: every tiny model in place; returns the names of those that are a local retraining."""
    root = ensure_toy(root)
    for dataset in DATASETS:
        tiny_reranker(dataset, root)
    return [name for name in model_names() if not is_shipped(name, model_folder(name, root))]


def retrain_toy_track(root: str | Path | None = None, seed: int = 0) -> Path:
    """`make models RETRAIN=1`: pretrain the tiny BLIP-2 and train every tiny model on this machine, in place of
    what is there. The result is a local retraining, not the course's reference weights."""
    root = Path(root) if root else toy_root()
    if not is_complete(root):
        generate_toy_data(root)
    pretrain_tiny_blip2(root, root / TINY_BLIP2, seed=seed)
    for dataset in DATASETS:
        _train_tiny(dataset, root, reranker=False, seed=seed)
        _train_tiny(dataset, root, reranker=True, seed=seed)
    return root


LOCAL = ("a local retraining, not the course's reference weights: its numbers differ from the README's within "
         "the retraining band stated there (delete {runs} and run `make models` to go back to the reference)")


def tiny_stages(dataset: str, root: Path, folders: dict[str, Path] | None = None,
                batch_size: int = 32) -> tuple[EvalContext, Reranker]:
    """Stage 1 (the tiny SPRC, ready to score) and stage 2 (the tiny re-ranker with the tiny preset's top K and
    fusion) of toy `dataset`: the toy root's models, or the model folders `folders` names ("sprc", "reranker")."""
    if folders is None:
        tiny_reranker(dataset, root)
        folders = {"sprc": model_folder(dataset, root), "reranker": model_folder(reranker_name(dataset), root)}
    sprc = load_model(folders["sprc"]).eval(), load_tokenizer(folders["sprc"])
    reranker = load_reranker(folders["reranker"]).eval(), load_tokenizer(folders["reranker"])
    where = EvalSettings(device="cpu", feature_cache=str(root / "cache"))
    second = Reranker(make_eval_context(*reranker, where, batch_size=batch_size), default_top_k(dataset, "tiny"),
                      default_fuse("tiny"))
    return make_eval_context(*sprc, where, batch_size=batch_size), second


def evaluate_tiny(dataset: str, root: Path) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(SPRC's metrics, SPRC²'s, chance) on toy val, as `validate` computes them: SPRC's ranking, then its top K
    re-ordered by the re-ranker."""
    stage1, stage2 = tiny_stages(dataset, root)
    first, second = validation_stages(stage1, dataset, root, stage2)
    return first, second, chance(dataset, root)
