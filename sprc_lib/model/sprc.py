"""SPRC on transformers' BLIP-2 parts (`sprc_lib.model.blip2`): the sentence-level prompts and their losses.

Every pass of the authors' code (`Blip2QformerCirAlignPrompt`) is one method, so a notebook can run them
one at a time. Shapes: B batch, T image tokens, Dv ViT width, Q queries, H Q-Former width, L caption
length, D projection width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sprc_lib import distributed
from sprc_lib.model.blip2 import Batch, Blip2Retrieval, Forward, LossSettings, TrainingLoss
from sprc_lib.model.config import SPRCConfig

LOSS_NAMES = ("loss_itc", "loss_rtc", "loss_align")
AUXILIARY = "auxiliary_prompts"  # the per-sample prompts' parameter (`SPRCModel.add_auxiliary_prompts`)


def weighted_loss(losses: dict[str, Tensor], loss_rtc: float, loss_align: float) -> Tensor:
    """The objective the optimiser follows: ITC plus the weighted RTC and alignment terms.

    The authors weight the auxiliary terms by 0.4 on CIRR and 1 on FashionIQ (the recipes hold both).
    """
    return losses["loss_itc"] + loss_rtc * losses["loss_rtc"] + loss_align * losses["loss_align"]


class SPRCModel(Blip2Retrieval):
    """The authors' model with transformers' module names, so BLIP-2 retrieval weights load by name.

    `prompt_tokens` and `temp` are SPRC's additions; `itm_head` is kept for checkpoint parity and never
    used, so it is frozen with the ViT (DistributedDataParallel expects every trainable parameter to
    get a gradient; AdamW skipped it anyway, having no gradient for it).
    """

    config_class = SPRCConfig
    base_model_prefix = "sprc"
    loss_names = LOSS_NAMES
    _keys_to_ignore_on_save = [AUXILIARY]  # training-only (`add_auxiliary_prompts`): no model needs them

    def __init__(self, config: SPRCConfig):
        super().__init__(config)
        self.prompt_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
        self.register_parameter(AUXILIARY, None)  # the paper's per-sample prompts, for training runs that ask
        self.post_init()
        self.freeze_vit()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            nn.init.normal_(self.prompt_tokens, std=self.config.qformer_config.initializer_range)

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The ViT, and the unused `itm_head`."""
        return [*self.vit_parameters(), *self.itm_head.parameters()]

    def add_auxiliary_prompts(self, count: int, saved: Tensor | None = None) -> None:
        """The paper's per-sample auxiliary prompts p'_i (its Eq. 2-3): one learned prompt per training triplet,
        each starting as the shared `prompt_tokens`. Triplet i's RTC pass reads its own, and the alignment loss
        pulls its sentence-level prompt towards it. The authors' code, which gave the released numbers, uses the
        shared prompt instead (their issue #17); this is the ablation of that choice. `saved`: a resumed run's."""
        start = self.prompt_tokens.detach().expand(count, -1, -1) if saved is None else saved
        if start.shape != (count, *self.prompt_tokens.shape[1:]):
            raise ValueError(f"saved per-sample prompts have shape {tuple(start.shape)}; the training set has "
                             f"{count} triplets")
        self.auxiliary_prompts = nn.Parameter(start.clone().to(self.prompt_tokens.device))

    def _rtc_prompts(self, batch_size: int, sample: Tensor | None) -> Tensor:
        """The prompts the RTC pass puts after [CLS], (B, Q, H): triplet `sample`'s own, or the shared one."""
        if sample is None:
            return self._expand(self.prompt_tokens, batch_size)
        if self.auxiliary_prompts is None:
            raise ValueError("per-sample prompts were asked for, but the model has none (add_auxiliary_prompts)")
        return self.auxiliary_prompts[sample]

    def fusion_pass(self, image_embeds: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Queries + caption + reference image -> the sentence-level prompt P, (B, Q, H).

        Queries attend to the caption (self-attention) and to the image (cross-attention); their outputs
        summarise "this image, modified as the text says" as Q prompt tokens.
        """
        queries = self._expand(self.query_tokens, input_ids.shape[0])
        out = self.qformer(
            query_embeds=self.embeddings(input_ids=input_ids, query_embeds=queries),
            query_length=self.config.num_query_tokens,
            attention_mask=self._query_mask(attention_mask),
            encoder_hidden_states=image_embeds,
        )
        return out.last_hidden_state[:, : self.config.num_query_tokens]

    def text_pass(self, prompt: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The prompt P in front of the caption, no image -> the composed query feature f, (B, D).

        SPRC's routing: with no image every position (prompts included) goes through the *text* FFN and
        no cross-attention runs (`query_length=0`). f is read at the [CLS] position right after P.
        """
        out = self.qformer(
            query_embeds=self.embeddings(input_ids=input_ids, query_embeds=prompt),
            query_length=0,
            attention_mask=self._query_mask(attention_mask),
        )
        return self._project_text(out.last_hidden_state[:, prompt.shape[1]])

    def composed_features(self, image_embeds: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Reference image + caption -> composed query feature f, (B, D): the fusion pass then the text pass."""
        prompt = self.fusion_pass(image_embeds, input_ids, attention_mask)
        return self.text_pass(prompt, input_ids, attention_mask)

    def prompt_embeddings(self, input_ids: Tensor, sample: Tensor | None = None) -> Tensor:
        """The RTC branch's input: [CLS], the learned `prompt_tokens` (or each triplet's own, `sample`), then the
        rest of the caption.

        Position embeddings run over the whole (L + Q)-long sequence, as in the reference's `no_img`
        embedding; the Q-Former's LayerNorm is applied by the Q-Former itself.
        """
        words = self.embeddings.word_embeddings(input_ids)
        prompts = self._rtc_prompts(input_ids.shape[0], sample).to(words.dtype)
        sequence = torch.cat([words[:, :1], prompts, words[:, 1:]], dim=1)
        positions = self.embeddings.position_ids[:, : sequence.shape[1]]
        return sequence + self.embeddings.position_embeddings(positions)

    def prompt_text_pass(self, input_ids: Tensor, attention_mask: Tensor, sample: Tensor | None = None) -> Tensor:
        """Caption with the learned prompts after [CLS], no image -> h, (B, D), read at [CLS].

        The mask is the reference's `cat(ones(Q), mask)` over the re-ordered sequence. Because [CLS] is
        never padding, that mask still lines up with the new layout position for position.
        """
        out = self.qformer(
            query_embeds=self.prompt_embeddings(input_ids, sample),
            query_length=0,
            attention_mask=self._query_mask(attention_mask),
        )
        return self._project_text(out.last_hidden_state[:, 0])

    # ----------------------------------------------------------------- scores and losses
    def representations(self, reference: Tensor, target: Tensor, input_ids: Tensor, attention_mask: Tensor,
                        sample: Tensor | None = None) -> dict[str, Tensor]:
        """Per triplet, everything the losses compare: the composed query, the prompt-text query, the target's
        query-token features and the fusion prompt's mean, in the order the authors' forward computes them.
        With `sample` (the triplets' indices in the training set), the RTC pass and the alignment read each
        triplet's auxiliary prompt (`add_auxiliary_prompts`), whose mean joins them as `anchor_mean`.

        Each depends on its own triplet only, so a batch can be split into micro-batches and these
        concatenated (what the gradient cache does, `sprc_lib.training.step`).
        """
        ref_embeds = self.encode_image(reference)
        target_features = self.image_features(self.encode_image(target))
        prompt = self.fusion_pass(ref_embeds, input_ids, attention_mask)
        composed = self.text_pass(prompt, input_ids, attention_mask)
        relative = self.prompt_text_pass(input_ids, attention_mask, sample)
        reps = {"composed": composed, "relative": relative, "target": target_features, "prompt_mean": prompt.mean(1)}
        if sample is not None:
            reps["anchor_mean"] = self._rtc_prompts(len(sample), sample).detach().mean(1)
        return reps

    def losses(self, reps: dict[str, Tensor], global_negatives: bool = False,
               temp: Tensor | None = None) -> dict[str, Tensor]:
        """The three SPRC losses of a batch's representations, unweighted (`temp`: the temperature to use,
        by default the model's own).

        In a multi-process run each process holds B of the W*B triplets of a step. By default, as in
        the authors' code, a query's negatives are the other B-1 targets of its own process. With
        `global_negatives` the target features of all processes are gathered (gradients flow back
        to their owners), so each query ranks its target among all W*B: the loss and gradients of
        one process on the whole batch, once DDP averages the processes' gradients. The queries
        themselves stay local, since both contrastive losses run one way only (query -> target).
        """
        temp = self.temp if temp is None else temp
        composed, target_features = reps["composed"], reps["target"]
        labels = torch.arange(composed.shape[0], device=composed.device)
        if global_negatives:
            target_features = distributed.all_gather_with_grad(target_features)
            labels = labels + distributed.rank() * composed.shape[0]
        loss_itc = F.cross_entropy(self.scores(composed, target_features) / temp, labels)
        loss_rtc = F.cross_entropy(self.scores(reps["relative"], target_features) / temp, labels)
        # The authors align with the shared `prompt_tokens` (detached), not a per-sample prompt (SPRC issue #17).
        prompt_mean = reps["prompt_mean"]
        if "anchor_mean" in reps:
            anchor_mean = reps["anchor_mean"]
        else:
            anchor_mean = self._expand(self.prompt_tokens, prompt_mean.shape[0]).detach().mean(1)
        loss_align = F.mse_loss(prompt_mean, anchor_mean.to(prompt_mean.dtype))
        return {"loss_itc": loss_itc, "loss_rtc": loss_rtc, "loss_align": loss_align}

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """The batch's `representations` (its `sample` too, with per-sample prompts): what DDP runs.

        `reference` and `target` are pixels or cached frozen-ViT tokens (see `encode_image`).
        """
        return self.representations(batch["reference"], batch["target"], batch["input_ids"], batch["attention_mask"],
                                    batch.get("sample"))

    def batch_loss(self, reps: dict[str, Tensor], settings: LossSettings, temp: Tensor | None = None) -> TrainingLoss:
        """A whole batch's weighted loss from its representations (`losses`, `weighted_loss`); the gradient cache
        computes it from representations gathered micro-batch by micro-batch."""
        parts = self.losses(reps, settings.global_negatives, temp)
        return TrainingLoss(weighted_loss(parts, settings.loss_rtc, settings.loss_align), parts)

    def training_loss(self, batch: Batch, settings: LossSettings, forward: Forward | None = None) -> TrainingLoss:
        """ITC plus the weighted RTC and alignment losses of B (reference, caption, target) triplets."""
        return self.batch_loss((forward or self)(batch), settings)
