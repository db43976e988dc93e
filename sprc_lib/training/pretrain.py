"""Stage 1 of the tiny track: pretrain a tiny BLIP-2 on the toy image-text pairs.

The paper fine-tunes SPRC from BLIP-2 (`Salesforce/blip2-itm-vit-g`), whose ViT and Q-Former were
pretrained on web image-text pairs. A model built from scratch has learned nothing yet, and SPRC's
losses alone cannot teach it to see and read in CPU minutes, so the tiny track repeats the idea at
toy scale: BLIP-2's image-text contrastive loss (ITC) on absolute captions of the training images
("a big red disc in the top left corner"), with the ViT trained too (the real ViT-g was pretrained by
EVA-CLIP before BLIP-2 froze it). The result is saved as a transformers `Blip2ForImageTextRetrieval`,
the same class as the real checkpoint, and SPRC training starts from it the same way.

Simplifications, said plainly: ITC only (BLIP-2 also trains image-text matching and captioning),
in-batch negatives only, and one short run. One addition: query-token dropout. Trained from scratch
with the max over query tokens, one token wins nearly every caption-image pair and the others learn
nothing; hiding a random share of each image's tokens from the max in every step makes many distinct
tokens win (notebook 02 measures what the shipped model's query tokens do).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import Blip2ForImageTextRetrieval

from sprc_lib.data import CIRRDataset, FashionIQDataset, build_transform
from sprc_lib.data.base import load_rgb
from sprc_lib.data.errors import DataError
from sprc_lib.data.schema import FASHIONIQ_CATEGORIES
from sprc_lib.data.toy import PRETRAINING
from sprc_lib.env import pick_device
from sprc_lib.model import SPRCModel
from sprc_lib.model.config import blip2_config
from sprc_lib.model.loading import new_model
from sprc_lib.model.tokenizer import make_word_tokenizer, tokenize
from sprc_lib.progress import tqdm


def read_pairs(root: str | Path) -> list[tuple[Path, str]]:
    """(image path, caption) pairs of the toy pretraining corpus under `root`."""
    path = Path(root) / PRETRAINING
    if not path.is_file():
        raise DataError(f"{path} not found: generate the toy data first (`python -m sprc_lib toy-data --out {root}`)")
    return [(Path(root) / pair["image"], pair["caption"]) for pair in json.loads(path.read_text())]


def vocabulary_captions(root: str | Path, pairs: list[tuple[Path, str]]) -> list[str]:
    """Every caption the tiny model will read in training: the corpus and both datasets' training triplets."""
    captions = [caption for _, caption in pairs]
    captions += [t.caption for t in CIRRDataset(root, "train", "relative").triplets]
    fiq = FashionIQDataset(root, "train", FASHIONIQ_CATEGORIES, "relative")
    captions += [c for t in fiq.triplets for c in t.captions]
    return captions


def itc_loss(model: SPRCModel, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor,
             query_dropout: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """BLIP-2's image-text contrastive loss: max over query tokens, both directions, learnable `temp`.

    The ViT is trained here, so this goes through `vision_model` (ViT + `ln_vision`) with gradients.
    `query_dropout` hides that share of each image's query tokens from the max (one always stays):
    trained from scratch with the max alone, one query token wins every pair and the others learn
    nothing; with some hidden at random, several must learn to match.
    """
    image_features = model.image_features(model.vision_model(pixels).last_hidden_state)
    text_features = model.text_features(input_ids, attention_mask)
    per_query = torch.einsum("td,iqd->tiq", text_features, image_features)  # (texts, images, query tokens)
    if query_dropout > 0:
        keep = torch.rand(image_features.shape[:2], generator=generator) >= query_dropout
        keep[torch.arange(len(keep)), torch.randint(keep.shape[1], (len(keep),), generator=generator)] = True
        per_query = per_query.masked_fill(~keep.to(per_query.device)[None], float("-inf"))
    sim = per_query.max(-1).values / model.temp  # (texts, images)
    labels = torch.arange(len(pixels), device=pixels.device)
    return (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels)) / 2


def keep_key_bias_zero(model: SPRCModel) -> None:
    """Mask the gradient of the k third of each ViT `qkv.bias`.

    EVA's attention has no key bias (only q and v biases); transformers stores one `qkv.bias` whose
    k part starts at zero. Softmax ignores a key bias, yet AdamW would still turn its rounding-noise
    gradient into steps; kept at zero, the pretrained ViT still fits the released (LAVIS) format.
    """
    for layer in model.vision_model.encoder.layers:
        bias = layer.self_attn.qkv.bias
        mask = torch.ones_like(bias)
        mask[bias.numel() // 3 : 2 * bias.numel() // 3] = 0
        bias.register_hook(lambda grad, mask=mask: grad * mask)


def to_blip2_retrieval(model: SPRCModel) -> Blip2ForImageTextRetrieval:
    """The pretrained tiny model as a transformers BLIP-2 retrieval model (what the hub's ViT-g one is)."""
    blip = Blip2ForImageTextRetrieval(blip2_config(model.config))
    state = {k: v for k, v in model.state_dict().items() if k not in ("prompt_tokens", "temp")}
    blip.load_state_dict(state, strict=True)
    return blip.eval()


def pretrain_tiny_blip2(
    data_root: str | Path,
    out_dir: str | Path,
    steps: int = 600,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    query_dropout: float = 0.25,
) -> Path:
    """Pretrain the tiny preset with ITC on the toy corpus; save model + tokenizer to `out_dir`."""
    dev = pick_device(device)
    out_dir = Path(out_dir)
    random.seed(seed)
    pairs = read_pairs(data_root)
    tokenizer = make_word_tokenizer(vocabulary_captions(data_root, pairs), out_dir)
    model = new_model("tiny", len(tokenizer), seed=seed).to(dev)
    for p in model.vit_parameters():  # stage 1 trains the ViT too (EVA-CLIP's role for the real ViT-g)
        p.requires_grad_(True)
    keep_key_bias_zero(model)
    transform = build_transform("targetpad", model.config.vision_config.image_size)
    pixels = torch.stack([transform(load_rgb(path)) for path, _ in tqdm(pairs, desc="load corpus", leave=False)])
    captions = [caption for _, caption in pairs]

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    model.vision_model.train()
    bar = tqdm(range(steps), desc="pretrain tiny BLIP-2 (ITC)")
    losses = []
    for _ in bar:
        batch = torch.randperm(len(pairs), generator=generator)[:batch_size]
        ids, mask = tokenize(tokenizer, [captions[i] for i in batch], model.config.max_txt_len)
        loss = itc_loss(model, pixels[batch].to(dev), ids.to(dev), mask.to(dev), query_dropout, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.temp.clamp_(0.001, 0.5)  # as BLIP-2 does
        losses.append(loss.item())
        bar.set_postfix(itc=f"{losses[-1]:.3f}", temp=f"{model.temp.item():.3f}")
    model.freeze_vit()
    to_blip2_retrieval(model.cpu()).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "pretraining.json").write_text(
        json.dumps({"pairs": len(pairs), "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
                    "query_dropout": query_dropout, "seed": seed, "first_itc": losses[0], "final_itc": losses[-1]},
                   indent=2)
    )
    return out_dir
