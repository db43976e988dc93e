"""The SPRC model, its presets and tokenizers, and loading of BLIP-2 and released SPRC weights."""

from sprc_lib.model.config import PRESETS, SPRCConfig, blip2_vitg_config, preset_config, tiny_config
from sprc_lib.model.sprc import LOSS_NAMES, SPRCModel, weighted_loss

__all__ = [
    "LOSS_NAMES",
    "PRESETS",
    "SPRCConfig",
    "SPRCModel",
    "blip2_vitg_config",
    "preset_config",
    "tiny_config",
    "weighted_loss",
]
