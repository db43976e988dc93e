"""SPRC²'s second stage: a cross-encoder that scores one (reference, caption, candidate) at a time.

The authors' unfinished `blip2_cir_rerank` (chunmeifeng/SPRC), as read: BLIP-2's image-text matching
(ITM) pass, with the caption's query tokens cross-attending to the reference image's tokens and the
candidate image's tokens side by side. Stage 1 (SPRC) ranks the gallery with one dot product per
image; this model then re-orders each query's top K with a full Q-Former pass per candidate.

One property of this design, as read (the course's reading, tested): the cross-attention's keys are the
two images' tokens side by side with nothing marking which image a token came from, and attention does
not see the order of its keys, so the score is symmetric in the reference and the candidate. What the
caption says decides the match; which image is the "before" cannot.

Shapes: B triplets, T image tokens, Dv ViT width, Q query tokens, L caption length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.initialization import no_init_weights

from sprc_lib.model.blip2 import Batch, Blip2Retrieval, Forward, LossSettings, RetrievalParts, TrainingLoss
from sprc_lib.model.config import PRESETS, SPRCConfig

RERANK_LOSS_NAMES = ("loss_itm",)


class RerankerConfig(SPRCConfig):
    """The same sizes as SPRC's (BLIP-2's); a model type of its own so a saved re-ranker loads as one."""

    model_type = "sprc_reranker"


def reranker_config(config: SPRCConfig) -> RerankerConfig:
    """The re-ranker's configuration at the sizes of an SPRC configuration (a preset, or a BLIP-2 checkpoint's)."""
    values = config.to_dict()
    values.pop("model_type", None)
    return RerankerConfig(**values)


def reranker_preset(name: str, vocab_size: int) -> RerankerConfig:
    """The re-ranker at a named preset's sizes (`tiny`, `blip2-vitg`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return reranker_config(PRESETS[name](vocab_size))


def negative_weights(scores: Tensor) -> tuple[Tensor, Tensor]:
    """The two distributions hard negatives are drawn from, for a batch's (B, B) scores `s[i, j]` (query i's
    caption against target j): softmax over each row (a target for each query) and over each column (a
    query for each target), the diagonal (the positives) at weight 0."""
    if scores.shape[0] < 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"hard negatives need a square batch of at least 2 triplets, got scores {tuple(scores.shape)}")
    masked = scores.detach().float().clone()
    masked.fill_diagonal_(float("-inf"))  # the authors subtract 10000: a positive's weight is 0 either way
    return F.softmax(masked, dim=1), F.softmax(masked.t(), dim=1)


def hard_negatives(scores: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One hard negative per triplet, drawn as the authors draw them (`multinomial` over `negative_weights`):
    (the negative target of each query, the negative query of each target), each (B,) indices."""
    for_queries, for_targets = negative_weights(scores)
    targets = torch.multinomial(for_queries, 1, generator=generator).squeeze(1)
    queries = torch.multinomial(for_targets, 1, generator=generator).squeeze(1)
    return targets, queries


class RerankerModel(Blip2Retrieval):
    """The SPRC² re-ranker: BLIP-2's parts (ViT, `ln_vision`, query tokens, Q-Former, ITM head) and `miner`,
    a frozen copy of the starting retrieval parts that only picks hard negatives.

    Trained: `ln_vision`, the query tokens, the Q-Former with its embeddings, the ITM head. Frozen: the ViT;
    `miner`; the projections and `temp`, which only the miner's scores use (the authors leave these
    trainable, but no loss reaches them, so they never change there either).
    """

    config_class = RerankerConfig
    base_model_prefix = "sprc_reranker"
    loss_names = RERANK_LOSS_NAMES

    def __init__(self, config: RerankerConfig):
        super().__init__(config)
        self.miner = RetrievalParts(config)
        self.post_init()
        self.freeze_vit()

    def frozen_parameters(self) -> list[nn.Parameter]:
        return [*self.vit_parameters(), *self.miner.parameters(), *self.vision_projection.parameters(),
                *self.text_projection.parameters(), self.temp]

    @torch.no_grad()
    def start_miner(self) -> None:
        """Copy the current retrieval parts into the frozen miner: done once, when training starts from BLIP-2."""
        for name, part in self.miner.named_children():
            part.load_state_dict(getattr(self, name).state_dict())
        self.miner.query_tokens.copy_(self.query_tokens)

    @torch.no_grad()
    def mining_scores(self, target_embeds: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, B): the frozen miner's caption-only feature of query i against target j's query-token features,
        max over query tokens, divided by `temp`: how easily target j could be mistaken for query i's."""
        targets = self.miner.image_features(target_embeds)
        texts = self.miner.text_features(input_ids, attention_mask)
        return self.scores(texts, targets) / self.temp

    def match_logits(self, reference_embeds: Tensor, candidate_embeds: Tensor, input_ids: Tensor,
                     attention_mask: Tensor) -> Tensor:
        """ITM logits (P, 2) of P (reference, caption, candidate): the query tokens and the caption through the
        Q-Former, cross-attending to the reference's and the candidate's `ln_vision` tokens concatenated
        (P, 2T, Dv); the ITM head on each query output, averaged over the query tokens."""
        queries = self._expand(self.query_tokens, input_ids.shape[0])
        out = self.qformer(
            query_embeds=self.embeddings(input_ids=input_ids, query_embeds=queries),
            query_length=self.config.num_query_tokens,
            attention_mask=self._query_mask(attention_mask),
            encoder_hidden_states=torch.cat([reference_embeds, candidate_embeds], dim=1),
        )
        hidden = out.last_hidden_state[:, : self.config.num_query_tokens]
        return self.itm_head(hidden.to(self.itm_head.weight.dtype)).mean(1)

    def match_scores(self, reference_embeds: Tensor, candidate_embeds: Tensor, input_ids: Tensor,
                     attention_mask: Tensor) -> Tensor:
        """The re-ranking score (P,): the probability of "match" (ITM class 1)."""
        logits = self.match_logits(reference_embeds, candidate_embeds, input_ids, attention_mask)
        return F.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)[:, 1]  # half -> fp32

    def training_examples(self, reference_embeds: Tensor, target_embeds: Tensor, input_ids: Tensor,
                          attention_mask: Tensor) -> dict[str, Tensor]:
        """The 3B examples of B triplets, in the authors' order: B positives (label 1), B with a hard-negative
        target, B with a hard-negative query (its reference and caption) before the true target (label 0)."""
        negative_target, negative_query = hard_negatives(
            self.mining_scores(target_embeds.detach(), input_ids, attention_mask))
        b = input_ids.shape[0]
        return {
            "reference": torch.cat([reference_embeds, reference_embeds, reference_embeds[negative_query]]),
            "candidate": torch.cat([target_embeds, target_embeds[negative_target], target_embeds]),
            "input_ids": torch.cat([input_ids, input_ids, input_ids[negative_query]]),
            "attention_mask": torch.cat([attention_mask, attention_mask, attention_mask[negative_query]]),
            "labels": torch.cat([input_ids.new_ones(b), input_ids.new_zeros(2 * b)]),
        }

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """The ITM logits of B (reference, caption, target) triplets' 3B examples, and their labels: what DDP runs.

        `reference` and `target` are pixels or cached frozen-ViT tokens (see `encode_image`). Hard negatives
        come from the process's own batch, as in the authors' code.
        """
        examples = self.training_examples(self.encode_image(batch["reference"]), self.encode_image(batch["target"]),
                                          batch["input_ids"], batch["attention_mask"])
        logits = self.match_logits(examples["reference"], examples["candidate"], examples["input_ids"],
                                   examples["attention_mask"])
        return {"logits": logits, "labels": examples["labels"]}

    def training_loss(self, batch: Batch, settings: LossSettings, forward: Forward | None = None) -> TrainingLoss:
        """The ITM loss, 2-way cross-entropy over the 3B examples; no weights apply (`settings` go unread)."""
        out = (forward or self)(batch)
        itm = F.cross_entropy(out["logits"].float(), out["labels"])
        return TrainingLoss(itm, {"loss_itm": itm})


def reranker_from_retrieval(model: Blip2Retrieval) -> RerankerModel:
    """A re-ranker starting from a BLIP-2-shaped model's weights (its ITM head included), miner started.

    The re-ranker takes `model`'s tensors over (`assign`) and is built without drawing the random weights they
    replace, so two models never sit in memory at once; only the miner is a copy. Drop `model` afterwards.
    """
    with no_init_weights():
        reranker = RerankerModel(reranker_config(model.config))
    state = {k: v for k, v in model.state_dict().items() if k in reranker.state_dict()}
    missing = sorted(set(reranker.state_dict()) - set(state) - {k for k in reranker.state_dict()
                                                                if k.startswith("miner.")})
    if missing:
        raise ValueError(f"cannot start a re-ranker from {type(model).__name__}: it lacks {missing[:5]}")
    reranker.load_state_dict(state, strict=False, assign=True)
    reranker.read_vit_as(model)  # its ViT tensors are `model`'s: a fingerprint reads them from their file
    reranker.start_miner()
    return reranker


