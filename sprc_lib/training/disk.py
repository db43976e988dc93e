"""What a run writes to disk, told before it writes it: the feature cache, `checkpoint.pt`, `best/` and `final/`.

Counted from the sizes, on a model built on the meta device (no weights allocated):
- a saved model folder (`best/`, `final/`, `convert`'s output) holds every tensor in fp32 (safetensors);
- `checkpoint.pt` holds what a resume cannot rebuild from the run's base model: every tensor but the frozen
  ones (the ViT; a re-ranker's miner and the projections its loss leaves alone), and AdamW's two moments
  of each trainable tensor. A save writes the new file beside the last one, then renames it over it, so
  saving needs room for two;
- the feature cache, one image's frozen-ViT tokens in fp16.
A Colab user keeps run folders on Drive (15 GB free) and the cache on the session's local disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sprc_lib.data.schema import CIRR_REAL_COUNTS, FASHIONIQ_REAL_COUNTS
from sprc_lib.features import cache_bytes, size_text
from sprc_lib.model import SPRCConfig, SPRCModel
from sprc_lib.model.rerank import RerankerModel, reranker_config
from sprc_lib.model.sprc import AUXILIARY

GB = 1e9
# The images a training run's cache fills on the real datasets: the train and val splits.
REAL_IMAGES = {
    "CIRR": sum(CIRR_REAL_COUNTS[split][1] for split in ("train", "val")),
    "FashionIQ": sum(images for (_, split), (_, images) in FASHIONIQ_REAL_COUNTS.items() if split in ("train", "val")),
}


@dataclass(frozen=True)
class RunDisk:
    """Bytes of what one run writes."""

    checkpoint: int  # checkpoint.pt
    model_folder: int  # best/ or final/
    cache_per_image: int  # the feature cache, per image

    def run_folder(self, save_training: bool) -> int:
        """The most a run folder holds at once: two checkpoints while a save replaces one, and with
        --save-training its best/ and final/."""
        return 2 * self.checkpoint + (2 * self.model_folder if save_training else 0)

    def describe(self, save_training: bool) -> str:
        saved = f", best/ and final/ {size_text(self.model_folder)} each" if save_training else ""
        return (f"checkpoint.pt {size_text(self.checkpoint)} (twice that while a save replaces it){saved}: up to "
                f"{size_text(self.run_folder(save_training))} at once")


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def run_disk(config: SPRCConfig, reranker: bool = False, per_sample: int = 0) -> RunDisk:
    """What a run of SPRC (or of the re-ranker) at `config`'s sizes writes; `per_sample`: the training triplets of
    a run with per-sample auxiliary prompts, which its checkpoint holds (with their AdamW moments) and its model
    folders do not."""
    with torch.device("meta"):
        model = RerankerModel(reranker_config(config)) if reranker else SPRCModel(config)
        if per_sample:
            model.add_auxiliary_prompts(per_sample)
    frozen = {id(p) for p in model.frozen_parameters()}
    trainable = [p for p in model.parameters() if id(p) not in frozen]
    kept = [t for t in model.state_dict(keep_vars=True).values() if id(t) not in frozen]
    saved = [t for name, t in model.state_dict().items() if name != AUXILIARY]
    tokens = model.vision_model.embeddings.num_positions
    return RunDisk(checkpoint=_bytes(kept) + 2 * _bytes(trainable), model_folder=_bytes(saved),
                   cache_per_image=cache_bytes(1, tokens, config.vision_config.hidden_size))


def describe_disk(config: SPRCConfig) -> list[str]:
    """The disk lines `plan` prints, for SPRC and the re-ranker at `config`'s sizes."""
    sprc, rerank = run_disk(config), run_disk(config, reranker=True)
    lines = [f"feature cache: {sprc.cache_per_image:,} bytes per image (fp16 ViT tokens); the train and val images "
             + ", ".join(f"of {name} ({n:,}) {n * sprc.cache_per_image / GB:.1f} GB" for name, n in REAL_IMAGES.items())
             + ": keep it on the machine's local disk"]
    for name, disk in (("SPRC", sprc), ("re-ranker", rerank)):
        lines.append(f"{name} run folder: {disk.describe(save_training=True)}")
    return lines
