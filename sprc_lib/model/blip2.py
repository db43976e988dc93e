"""What SPRC and the SPRC² re-ranker share: BLIP-2's stage-1 parts with transformers' module names.

Both models start from a BLIP-2 retrieval checkpoint (`Salesforce/blip2-itm-vit-g`), so both hold the
same parts under the same names and load it by name: the frozen ViT with its trainable `ln_vision`,
the learned query tokens, the Q-Former with its text embeddings, the two projections, the ITM head
and `temp`. Shapes: B batch, T image tokens, Dv ViT width, Q queries, H Q-Former width, D projection width.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

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

from sprc_lib.model.config import SPRCConfig


class TrainingLoss(NamedTuple):
    """What a model's `training_loss` returns: the loss the optimiser follows, and the terms it is made of."""

    loss: Tensor
    parts: dict[str, Tensor]


class LossSettings(Protocol):
    """What a training loss reads from the settings: the auxiliary losses' weights, and where SPRC's negatives
    come from (a recipe's weights and a step's settings, or a run's resolved settings, have them)."""

    loss_rtc: float
    loss_align: float
    global_negatives: bool


Batch = Mapping[str, Tensor]  # a training batch: `reference`, `target` (pixels or ViT tokens), `input_ids`, ...
Forward = Callable[[Batch], dict[str, Tensor]]  # what runs a model's forward: the model, or DDP around it


def is_vit_name(name: str) -> bool:
    """Whether a state-dict name is the frozen ViT's (its embeddings and blocks, not `ln_vision`)."""
    return name.startswith(("vision_model.embeddings.", "vision_model.encoder."))


class RetrievalPasses:
    """BLIP-2's retrieval parts and the passes through them, for a model's top level and for the re-ranker's
    frozen copy (its hard-negative miner) alike: queries, text embeddings, Q-Former, projections."""

    def add_retrieval_parts(self, config: SPRCConfig) -> None:
        """The parts under BLIP-2's names, so that a BLIP-2 checkpoint loads into them by name."""
        hidden = config.qformer_config.hidden_size
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, hidden))
        self.embeddings = Blip2TextEmbeddings(config.qformer_config)
        self.qformer = Blip2QFormerModel._from_config(config.qformer_config)
        self.vision_projection = nn.Linear(hidden, config.image_text_hidden_size)
        self.text_projection = nn.Linear(hidden, config.image_text_hidden_size)

    def image_hidden(self, image_embeds: Tensor) -> Tensor:
        """Queries read the image through cross-attention: (B, T, Dv) -> (B, Q, H)."""
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
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
        out = self.qformer(query_embeds=self.embeddings(input_ids=input_ids), query_length=0,
                           attention_mask=attention_mask)
        return self._project_text(out.last_hidden_state[:, 0])

    @staticmethod
    def scores(query_features: Tensor, image_features: Tensor) -> Tensor:
        """Similarity of each query (B, D) to each image (N, Q, D): max over the image's query tokens -> (B, N)."""
        return torch.einsum("bd,nqd->bnq", query_features, image_features.to(query_features.dtype)).amax(-1)


class RetrievalParts(RetrievalPasses, nn.Module):
    """The retrieval parts on their own: the re-ranker's frozen miner."""

    def __init__(self, config: SPRCConfig):
        super().__init__()
        self.add_retrieval_parts(config)


class Blip2Retrieval(RetrievalPasses, PreTrainedModel):
    """BLIP-2's stage-1 parts and the passes both models run; subclasses add their own parts and losses.

    `vision_model.post_layernorm` plays the authors' trainable `ln_vision`; the rest of the ViT is frozen.
    """

    config: SPRCConfig
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["Blip2EncoderLayer", "Blip2QFormerLayer"]

    def __init__(self, config: SPRCConfig):
        super().__init__(config)
        self.vision_model = Blip2VisionModel._from_config(config.vision_config)
        self.vision_model.post_layernorm.eps = config.ln_vision_eps
        self.add_retrieval_parts(config)
        self.itm_head = nn.Linear(config.qformer_config.hidden_size, 2)
        self.temp = nn.Parameter(torch.tensor(float(config.temp_init)))

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loading, then the frozen parts frozen again: loading materialises fresh parameters."""
        model = super().from_pretrained(*args, **kwargs)
        model.freeze_vit()
        return model

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            nn.init.normal_(self.query_tokens, std=self.config.qformer_config.initializer_range)
            nn.init.constant_(self.temp, self.config.temp_init)
        elif isinstance(module, Blip2TextEmbeddings):
            module.position_ids.copy_(torch.arange(module.position_ids.shape[-1]).expand((1, -1)))

    def training_loss(self, batch: Batch, settings: LossSettings, forward: Forward | None = None) -> TrainingLoss:
        """The model's loss on a training batch, and its parts. `forward` runs the forward pass: DDP around this
        model in a multi-process run, so the gradients are averaged; by default the model itself."""
        raise NotImplementedError

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
        """The trainable LayerNorm after the frozen ViT (the authors' `ln_vision`)."""
        return self.vision_model.post_layernorm

    def vit_parameters(self) -> list[nn.Parameter]:
        """The frozen part: patch/position embeddings and the transformer blocks, not `ln_vision`."""
        vit = self.vision_model
        return [*vit.embeddings.parameters(), *vit.encoder.parameters()]

    def vit_names(self) -> list[str]:
        """The state-dict names of `vit_parameters` (what `share_vit` shares)."""
        return [n for n in self.state_dict() if is_vit_name(n)]

    def share_vit(self, owner: Blip2Retrieval, read: Callable[[str], Tensor]) -> bool:
        """Use `owner`'s frozen ViT instead of this model's own when the weights this model was to load
        (`read(name)`, one tensor at a time) equal it: two models started from one BLIP-2 (stage 1 and the
        re-ranker) then hold one ViT in memory, not two (4 GB each at ViT-g's size). Returns whether it did."""
        theirs, read_theirs = owner.state_dict(), owner.vit_reader()  # from its file where it can: no pages kept
        for name in self.vit_names():
            try:
                mine = read(name)
            except KeyError:  # the source lacks it: the load that follows names what is missing
                return False
            if mine.shape != theirs[name].shape:
                return False
            other = read_theirs(name)
            if not torch.equal(mine.to(other.device, other.dtype), other):
                return False
        self.vision_model.embeddings = owner.vision_model.embeddings
        self.vision_model.encoder = owner.vision_model.encoder
        self.read_vit_as(owner)
        return True

    def read_vit_as(self, other: Blip2Retrieval) -> None:
        """This model holds `other`'s ViT tensors (shared, or taken over): read them where `other` does
        (`vit_reader`); the stamps still tell whether they stayed unwritten."""
        self._vit_source = getattr(other, "_vit_source", None)

    def remember_vit_source(self, read: Callable[[str], Tensor]) -> None:
        """Note where this model's frozen ViT was memory-mapped from: `read(name)` reads a tensor again through a
        mapping of its own, closed after the read. A fingerprint that reads the ViT so (`vit_reader`) leaves this
        model's mapped pages unread: a run that the feature cache serves never holds the ViT's 4 GB in RAM."""
        self._vit_source = (read, self._vit_stamp())

    def _vit_stamp(self) -> dict[str, tuple[int, int]]:
        """Each ViT tensor's storage and count of in-place writes: while they stay, so do the values."""
        return {n: (t.data_ptr(), t._version) for n, t in self.state_dict().items() if is_vit_name(n)}

    def vit_reader(self) -> Callable[[str], Tensor]:
        """Reads the frozen ViT's tensors as the model holds them now: from their file while the model still holds,
        unwritten, the very tensors it mapped from there (`remember_vit_source`), else from the model."""
        state = self.state_dict()
        source = getattr(self, "_vit_source", None)
        if source is None or source[1] != self._vit_stamp():
            return state.__getitem__

        def read(name: str) -> Tensor:
            try:
                return source[0](name).to(state[name].dtype)
            except KeyError:  # not in the file under this name: the model's own
                return state[name]

        return read

    def shares_vit_with(self, other: Blip2Retrieval) -> bool:
        """Whether the two models hold one frozen ViT (`share_vit`)."""
        return self.vision_model.encoder is other.vision_model.encoder

    def frozen_parameters(self) -> list[nn.Parameter]:
        """What this model never trains: the ViT here; subclasses add the parts their loss leaves alone."""
        return self.vit_parameters()

    def freeze_vit(self) -> None:
        """Freeze the ViT as the authors do (`ln_vision` stays trainable), and the parts the model never trains."""
        for p in self.frozen_parameters():
            p.requires_grad_(False)
        self.vision_model.embeddings.eval()
        self.vision_model.encoder.eval()

    def train(self, mode: bool = True):
        """Like `nn.Module.train`, but the frozen ViT always stays in eval mode (the authors' `disabled_train`)."""
        super().train(mode)
        self.vision_model.embeddings.eval()
        self.vision_model.encoder.eval()
        return self

    def set_vit_dtype(self, dtype: torch.dtype) -> None:
        """Keep the frozen ViT in half precision on a GPU (the authors keep it in fp16)."""
        self.vision_model.embeddings.to(dtype)
        self.vision_model.encoder.to(dtype)

    @property
    def vit_dtype(self) -> torch.dtype:
        return self.vision_model.embeddings.patch_embedding.weight.dtype

    @torch.no_grad()
    def vit(self, pixel_values: Tensor) -> Tensor:
        """Frozen ViT tokens before `ln_vision`: (B, 3, S, S) -> (B, T, Dv). What the feature cache stores.

        A half-precision ViT runs under autocast in its own dtype, as the authors' fp16 ViT does.
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

