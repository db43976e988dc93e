"""plan's compute counts: the ViT's forward and the trainable step, counted by torch, grow with the model as they
should, and an epoch's estimate is their sum over the epoch at the stated rate."""

from __future__ import annotations

import pytest
from transformers import Blip2VisionConfig

from sprc_lib.model import SPRCConfig, preset_config
from sprc_lib.training.compute import T4_TFLOPS, StepFlops, describe_compute, step_flops


def with_vit_layers(layers: int) -> SPRCConfig:
    config = preset_config("tiny", 1000)
    config.vision_config = Blip2VisionConfig(**{**config.vision_config.to_dict(), "num_hidden_layers": layers})
    return SPRCConfig(**config.to_dict())


def test_the_vit_count_grows_with_its_layers_and_the_trainable_count_does_not():
    one, two = step_flops(with_vit_layers(1)), step_flops(with_vit_layers(2))
    per_layer = two.vit_per_image - one.vit_per_image
    assert per_layer > 0 and one.vit_per_image > per_layer  # the patch embedding comes on top of the layers
    assert step_flops(with_vit_layers(3)).vit_per_image - two.vit_per_image == per_layer
    assert one.trainable_per_triplet == two.trainable_per_triplet > 0


def test_an_epoch_is_the_counts_over_its_triplets_at_the_stated_rate():
    flops = StepFlops(vit_per_image=5 * 10**12, trainable_per_triplet=2 * 10**12)
    assert flops.per_triplet(cached=False) == 12 * 10**12 and flops.cache_gain == pytest.approx(6.0)
    assert flops.epoch_seconds(100, cached=True) == pytest.approx(100 * 2 / T4_TFLOPS)
    assert "6.00x less" in describe_compute(flops)[0]
