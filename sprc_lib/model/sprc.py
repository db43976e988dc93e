"""SPRC on transformers' BLIP-2 parts: the frozen ViT, the Q-Former, and the sentence-level prompts.

Every pass of the reference (`Blip2QformerCirAlignPrompt`) is one method, so a notebook can run them
one at a time. Shapes: B batch, T image tokens, Dv ViT width, Q queries, H Q-Former width, L caption
length, D projection width.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.models.blip_2.modeling_blip_2 import (
    Blip2QFormerModel,
    Blip2TextEmbeddings,
    Blip2VisionModel,
)

from sprc_lib import distributed
from sprc_lib.model.config import SPRCConfig

LOSS_NAMES = ("loss_itc", "loss_rtc", "loss_align")


def weighted_loss(losses: dict[str, Tensor], loss_rtc: float, loss_align: float) -> Tensor:
    """The objective the optimiser follows: ITC plus the weighted RTC and alignment terms.

    The authors weight the auxiliary terms by 0.4 on CIRR and 1 on FashionIQ (the recipes hold both).
    """
    return losses["loss_itc"] + loss_rtc * losses["loss_rtc"] + loss_align * losses["loss_align"]


class SPRCModel(PreTrainedModel):
    """The reference model with transformers' module names, so BLIP-2 retrieval weights load by name.

    `vision_model.post_layernorm` plays the reference's trainable `ln_vision`; the rest of the ViT is
    frozen. `prompt_tokens` and `temp` are SPRC's additions; `itm_head` is kept for checkpoint parity
    and never used, so it is frozen too (DistributedDataParallel expects every trainable parameter
    to get a gradient; AdamW skipped it anyway, having no gradient for it).
    """

    config_class = SPRCConfig
    config: SPRCConfig
    base_model_prefix = "sprc"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["Blip2EncoderLayer", "Blip2QFormerLayer"]

    def __init__(self, config: SPRCConfig):
        super().__init__(config)
        hidden = config.qformer_config.hidden_size
        self.vision_model = Blip2VisionModel._from_config(config.vision_config)
        self.vision_model.post_layernorm.eps = config.ln_vision_eps
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, hidden))
        self.prompt_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, hidden))
        self.embeddings = Blip2TextEmbeddings(config.qformer_config)
        self.qformer = Blip2QFormerModel._from_config(config.qformer_config)
        self.vision_projection = nn.Linear(hidden, config.image_text_hidden_size)
        self.text_projection = nn.Linear(hidden, config.image_text_hidden_size)
        self.itm_head = nn.Linear(hidden, 2)
        self.temp = nn.Parameter(torch.tensor(float(config.temp_init)))
        self.post_init()
        self.freeze_vit()

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> SPRCModel:
        """transformers' loading, then the ViT frozen again: loading materialises fresh parameters."""
        model = super().from_pretrained(*args, **kwargs)
        model.freeze_vit()
        return model

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            std = self.config.qformer_config.initializer_range
            nn.init.normal_(self.query_tokens, std=std)
            nn.init.normal_(self.prompt_tokens, std=std)
            nn.init.constant_(self.temp, self.config.temp_init)
        elif isinstance(module, Blip2TextEmbeddings):
            module.position_ids.copy_(torch.arange(module.position_ids.shape[-1]).expand((1, -1)))

    def checkpoint_qformer(self, enable: bool = True) -> None:
        """Activation checkpointing on every Q-Former layer: a layer keeps only its input in the forward and
        recomputes the rest in the backward (same RNG state, so the same dropout masks): less memory, a
        second forward's time."""
        for layer in self.qformer.encoder.layer:
            layer.gradient_checkpointing = enable
            layer._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)

    # ----------------------------------------------------------------- the frozen ViT
    @property
    def ln_vision(self) -> nn.LayerNorm:
        """The trainable LayerNorm after the frozen ViT (the reference's `ln_vision`)."""
        return self.vision_model.post_layernorm

    def vit_parameters(self) -> list[nn.Parameter]:
        """The frozen part: patch/position embeddings and the transformer blocks, not `ln_vision`."""
        vit = self.vision_model
        return [*vit.embeddings.parameters(), *vit.encoder.parameters()]

    def freeze_vit(self) -> None:
        """Freeze the ViT as the reference does; `ln_vision` stays trainable. The unused `itm_head` too."""
        for p in [*self.vit_parameters(), *self.itm_head.parameters()]:
            p.requires_grad_(False)
        self.vision_model.embeddings.eval()
        self.vision_model.encoder.eval()

    def train(self, mode: bool = True) -> SPRCModel:
        """Like `nn.Module.train`, but the frozen ViT always stays in eval mode (the reference's `disabled_train`)."""
        super().train(mode)
        self.vision_model.embeddings.eval()
        self.vision_model.encoder.eval()
        return self

    def set_vit_dtype(self, dtype: torch.dtype) -> None:
        """Keep the frozen ViT in half precision on a GPU (the reference keeps it in fp16)."""
        self.vision_model.embeddings.to(dtype)
        self.vision_model.encoder.to(dtype)

    @property
    def vit_dtype(self) -> torch.dtype:
        return self.vision_model.embeddings.patch_embedding.weight.dtype

    @torch.no_grad()
    def vit(self, pixel_values: Tensor) -> Tensor:
        """Frozen ViT tokens before `ln_vision`: (B, 3, S, S) -> (B, T, Dv). What the feature cache stores.

        A half-precision ViT runs under autocast in its own dtype, as the reference's fp16 ViT does.
        """
        half = self.vit_dtype in (torch.float16, torch.bfloat16)
        with torch.autocast(pixel_values.device.type, dtype=self.vit_dtype, enabled=half):
            hidden = self.vision_model.embeddings(pixel_values)
            return self.vision_model.encoder(inputs_embeds=hidden).last_hidden_state

    def encode_image(self, images: Tensor) -> Tensor:
        """`ln_vision(ViT(x))` -> (B, T, Dv) in fp32.

        `images` is either pixels (B, 3, S, S) or frozen-ViT tokens (B, T, Dv) read from a feature cache;
        both paths give the same result because the ViT is frozen and deterministic.
        """
        tokens = self.vit(images) if images.dim() == 4 else images
        return self.ln_vision(tokens.to(self.ln_vision.weight.dtype))

    # ----------------------------------------------------------------- Q-Former passes
    def _expand(self, tokens: Tensor, batch: int) -> Tensor:
        return tokens.expand(batch, -1, -1)

    def _query_mask(self, attention_mask: Tensor) -> Tensor:
        ones = attention_mask.new_ones(attention_mask.shape[0], self.config.num_query_tokens)
        return torch.cat([ones, attention_mask], dim=1)

    def image_hidden(self, image_embeds: Tensor) -> Tensor:
        """Queries read the image through cross-attention: (B, T, Dv) -> (B, Q, H)."""
        queries = self._expand(self.query_tokens, image_embeds.shape[0])
        out = self.qformer(query_embeds=self.embeddings(query_embeds=queries), encoder_hidden_states=image_embeds)
        return out.last_hidden_state

    def image_features(self, image_embeds: Tensor) -> Tensor:
        """Target / gallery features: one normalised vector per query token, (B, Q, D)."""
        hidden = self.image_hidden(image_embeds)
        return F.normalize(self.vision_projection(hidden.to(self.vision_projection.weight.dtype)), dim=-1)

    def _project_text(self, cls: Tensor) -> Tensor:
        return F.normalize(self.text_projection(cls.to(self.text_projection.weight.dtype)), dim=-1)

    def text_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """BLIP-2's unimodal text feature: the caption alone through the Q-Former's text path -> (B, D)."""
        out = self.qformer(
            query_embeds=self.embeddings(input_ids=input_ids), query_length=0, attention_mask=attention_mask
        )
        return self._project_text(out.last_hidden_state[:, 0])

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

    def prompt_embeddings(self, input_ids: Tensor) -> Tensor:
        """The RTC branch's input: [CLS], the learned `prompt_tokens`, then the rest of the caption.

        Position embeddings run over the whole (L + Q)-long sequence, as in the reference's `no_img`
        embedding; the Q-Former's LayerNorm is applied by the Q-Former itself.
        """
        words = self.embeddings.word_embeddings(input_ids)
        prompts = self._expand(self.prompt_tokens, input_ids.shape[0]).to(words.dtype)
        sequence = torch.cat([words[:, :1], prompts, words[:, 1:]], dim=1)
        positions = self.embeddings.position_ids[:, : sequence.shape[1]]
        return sequence + self.embeddings.position_embeddings(positions)

    def prompt_text_pass(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Caption with the learned prompts after [CLS], no image -> h, (B, D), read at [CLS].

        The mask is the reference's `cat(ones(Q), mask)` over the re-ordered sequence. Because [CLS] is
        never padding, that mask still lines up with the new layout position for position.
        """
        out = self.qformer(
            query_embeds=self.prompt_embeddings(input_ids),
            query_length=0,
            attention_mask=self._query_mask(attention_mask),
        )
        return self._project_text(out.last_hidden_state[:, 0])

    # ----------------------------------------------------------------- scores and losses
    @staticmethod
    def scores(query_features: Tensor, image_features: Tensor) -> Tensor:
        """Similarity of each query (B, D) to each image (N, Q, D): max over the image's query tokens -> (B, N)."""
        return torch.einsum("bd,nqd->bnq", query_features, image_features.to(query_features.dtype)).amax(-1)

    def representations(self, reference: Tensor, target: Tensor, input_ids: Tensor, attention_mask: Tensor
                        ) -> dict[str, Tensor]:
        """Per triplet, everything the losses compare: the composed query, the prompt-text query, the target's
        query-token features and the fusion prompt's mean, in the order the authors' forward computes them.

        Each depends on its own triplet only, so a batch can be split into micro-batches and these
        concatenated (what the gradient cache does, `sprc_lib.training.step`).
        """
        ref_embeds = self.encode_image(reference)
        target_features = self.image_features(self.encode_image(target))
        prompt = self.fusion_pass(ref_embeds, input_ids, attention_mask)
        composed = self.text_pass(prompt, input_ids, attention_mask)
        relative = self.prompt_text_pass(input_ids, attention_mask)
        return {"composed": composed, "relative": relative, "target": target_features, "prompt_mean": prompt.mean(1)}

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
        anchor = self._expand(self.prompt_tokens, prompt_mean.shape[0]).detach()
        loss_align = F.mse_loss(prompt_mean, anchor.mean(1).to(prompt_mean.dtype))
        return {"loss_itc": loss_itc, "loss_rtc": loss_rtc, "loss_align": loss_align}

    def forward(
        self,
        reference: Tensor,
        target: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        global_negatives: bool = False,
        representations: bool = False,
    ) -> dict[str, Tensor]:
        """The three SPRC losses for B (reference, caption, target) triplets, unweighted; or, with
        `representations`, what they compare (see `representations` and `losses`).

        `reference` and `target` are pixels or cached frozen-ViT tokens (see `encode_image`).
        """
        reps = self.representations(reference, target, input_ids, attention_mask)
        return reps if representations else self.losses(reps, global_negatives)
