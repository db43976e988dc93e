"""What a training step computes, counted before a GPU is rented: `plan`'s estimate of an epoch's time.

The floating-point operations are counted by torch's `FlopCounterMode`, not derived by hand: the frozen
ViT's forward on one image (on the meta device, no weights allocated) and the trainable step's forward
and backward on cached ViT tokens (a real step on the CPU, the ViT unallocated, as `plan`'s memory
measure runs it). A GPU's time is their sum over an epoch's triplets divided by a sustained rate, and that
rate is an assumption, stated as one: `T4_TFLOPS`. Data loading, validation and the optimiser's own update
are not counted. The rehearsal checks the counts on its CPU: the gain they predict for a step from the
feature cache against the gain `bench` measures there at the real size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from sprc_lib.data.schema import CIRR_REAL_COUNTS, FASHIONIQ_REAL_COUNTS
from sprc_lib.model import SPRCConfig, SPRCModel
from sprc_lib.model.synthetic import random_triplets

# An assumed sustained rate for the ViT-g and BERT-base matmuls in fp16 on a T4 (its tensor-core peak is 65
# TFLOPS): an estimate's input, not a measurement.
T4_TFLOPS = 20.0
BATCH = 2  # triplets of the counted step (the count is per triplet)


@dataclass(frozen=True)
class StepFlops:
    """Counted floating-point operations of one training step's parts."""

    vit_per_image: int  # the frozen ViT's forward
    trainable_per_triplet: int  # the trainable step's forward and backward, from cached ViT tokens

    def per_triplet(self, cached: bool) -> int:
        """From the cache the ViT does not run; from pixels it runs on the reference and the target."""
        return self.trainable_per_triplet + (0 if cached else 2 * self.vit_per_image)

    @property
    def cache_gain(self) -> float:
        """How much less a step from the cache computes than one from pixels."""
        return self.per_triplet(cached=False) / self.per_triplet(cached=True)

    def epoch_seconds(self, triplets: int, cached: bool, tflops: float = T4_TFLOPS) -> float:
        return triplets * self.per_triplet(cached) / (tflops * 1e12)


def step_flops(config: SPRCConfig, seed: int = 0) -> StepFlops:
    """Count the ViT's forward per image and the trainable step's forward and backward per triplet."""
    from sprc_lib.training.memory import trainable_model

    with torch.device("meta"):
        vit = SPRCModel(config).vision_model
    pixels = torch.empty(BATCH, 3, config.vision_config.image_size, config.vision_config.image_size, device="meta")
    with FlopCounterMode(display=False) as counted, torch.no_grad():
        vit.encoder(inputs_embeds=vit.embeddings(pixels))
    vit_flops = counted.get_total_flops() // BATCH

    model = trainable_model(config, seed)
    triplets = random_triplets(config, BATCH, seed, lengths=[config.max_txt_len] * BATCH)
    shape = (2, BATCH, vit.embeddings.num_positions, config.vision_config.hidden_size)
    tokens = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with FlopCounterMode(display=False) as counted:
        losses = model.losses(model({"reference": tokens[0], "target": tokens[1], "input_ids": triplets["input_ids"],
                                     "attention_mask": triplets["attention_mask"]}))
        sum(losses.values()).backward()
    return StepFlops(vit_flops, counted.get_total_flops() // BATCH)


# Training triplets of the real releases, per epoch.
REAL_TRIPLETS = {"CIRR": CIRR_REAL_COUNTS["train"][0],
                 "FashionIQ": sum(n for (_, split), (n, _) in FASHIONIQ_REAL_COUNTS.items() if split == "train")}


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.1f} s"


def describe_compute(flops: StepFlops) -> list[str]:
    """The compute lines `plan` prints: the counts, and an epoch's estimated time on a T4."""
    epochs = "; ".join(f"{name} ({n:,} triplets) {_duration(flops.epoch_seconds(n, cached=False))} from pixels, "
                       f"{_duration(flops.epoch_seconds(n, cached=True))} from the cache"
                       for name, n in REAL_TRIPLETS.items())
    return [f"counted (FlopCounterMode): the frozen ViT's forward {flops.vit_per_image / 1e9:,.1f} GFLOP per image, "
            f"the trainable step (forward and backward) {flops.trainable_per_triplet / 1e9:,.1f} GFLOP per triplet: "
            f"a step from the feature cache computes {flops.cache_gain:.2f}x less than one from pixels",
            f"an epoch's training steps at an assumed sustained {T4_TFLOPS:g} TFLOPS on a T4 (its fp16 peak is 65): "
            f"{epochs}. An estimate: data loading and validation come on top, and small operations run further "
            "below a device's peak than the ViT's large ones (on a CPU, bench measures less gain than the count)"]
