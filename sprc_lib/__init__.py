"""sprc_lib: the library behind the SPRC course (composed image retrieval with sentence-level prompts).

The names a user of the core needs are importable from here, each loaded on first use (so the command
line starts without torch): data, model, training, evaluation. The courseware is `sprc_lib.course`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_HOMES = {
    "sprc_lib.data": ("CIRRDataset", "DataError", "FashionIQDataset", "TargetPad", "build_transform", "collate",
                      "load_rgb", "unnormalize"),
    "sprc_lib.data.schema": ("DATASETS", "FASHIONIQ_CATEGORIES"),
    "sprc_lib.env": ("autocast_dtype", "environment_report", "on_colab", "pick_device"),
    "sprc_lib.features": ("FeatureCache",),
    "sprc_lib.model": ("LOSS_NAMES", "SPRCConfig", "SPRCModel", "preset_config", "weighted_loss"),
    "sprc_lib.model.loading": ("BLIP2_RETRIEVAL", "convert_lavis_checkpoint", "load_model",
                               "load_model_and_tokenizer"),
    "sprc_lib.model.tokenizer": ("load_tokenizer", "tokenize"),
    "sprc_lib.training.config": ("TrainConfig", "resolve"),
    "sprc_lib.training.recipes": ("PAPER", "TOY", "Recipe", "recipe_for"),
    "sprc_lib.training.memory": ("describe_plans", "plan_memory"),
    "sprc_lib.training.runs": ("CHECKPOINT", "read_csv"),
    "sprc_lib.training.trainer": ("TrainResult", "resume_training", "train"),
    "sprc_lib.evaluation": ("EvalContext", "EvalSettings", "chance", "cirr_test_submission", "make_eval_context",
                            "validate"),
    "sprc_lib.evaluation.index": ("index_features", "query_scores", "relative_queries"),
    "sprc_lib.evaluation.protocols": ("validation_galleries",),
    "sprc_lib.evaluation.metrics": ("HEADLINE_KEYS", "cirr_metrics", "fashioniq_metrics", "rank_gallery"),
    "sprc_lib.evaluation.submission": ("validate_cirr_submission",),
    "sprc_lib.tables": ("format_table", "metrics_table"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'sprc_lib' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME_OF[name]), name)
