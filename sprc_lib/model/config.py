"""The SPRC configuration and the presets the course uses (tiny for CPUs, the paper's ViT-g for GPUs)."""

from __future__ import annotations

from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, PreTrainedConfig


class SPRCConfig(PreTrainedConfig):
    """BLIP-2 vision + Q-Former sizes plus what SPRC adds: prompt tokens, `temp`, the caption length.

    `ln_vision_eps` exists because the reference's `ln_vision` uses eps 1e-5 while its ViT blocks use
    1e-6; transformers' vision config has one `layer_norm_eps` for both.
    """

    model_type = "sprc"
    sub_configs_defaults = {"vision_config": Blip2VisionConfig, "qformer_config": Blip2QFormerConfig}

    vision_config: dict | PreTrainedConfig | None = None
    qformer_config: dict | PreTrainedConfig | None = None
    num_query_tokens: int = 32
    image_text_hidden_size: int = 256
    max_txt_len: int = 32
    ln_vision_eps: float = 1e-5
    temp_init: float = 0.07
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.qformer_config.encoder_hidden_size = self.vision_config.hidden_size
        if not self.qformer_config.use_qformer_text_input:
            raise ValueError("SPRC runs text through the Q-Former: set qformer_config.use_qformer_text_input=True")


def tiny_config(vocab_size: int) -> SPRCConfig:
    """A BLIP-2-shaped model small enough to train on a laptop CPU in minutes on the toy data.

    Same structure as the paper's model: a ViT, a Q-Former with cross-attention every 2nd layer and
    separate query/text FFNs, learned queries and prompts. Three settings differ from BERT's defaults
    because they decide whether a model this small, started from scratch, learns at all (measured on
    the toy data): 2 Q-Former layers, no dropout (BERT's 0.1 drowns the tiny initial signal), and
    weights drawn with std 0.06 (about 1/sqrt(width) here; BERT's 0.02 suits width 768). The vision
    default of transformers (1e-10) would give near-zero features that never learn.
    """
    vision = Blip2VisionConfig(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=64,
        patch_size=8,
        layer_norm_eps=1e-6,
        qkv_bias=True,
        initializer_range=0.06,
    )
    qformer = Blip2QFormerConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=128,
        cross_attention_frequency=2,
        use_qformer_text_input=True,
        initializer_range=0.06,
    )
    return SPRCConfig(
        vision_config=vision,
        qformer_config=qformer,
        num_query_tokens=16,
        image_text_hidden_size=64,
        max_txt_len=32,
    )


def blip2_vitg_config(vocab_size: int = 30523) -> SPRCConfig:
    """The paper's sizes: EVA ViT-g/14 at 224 px (39 blocks) and a BERT-base Q-Former with 32 queries."""
    vision = Blip2VisionConfig(
        hidden_size=1408,
        intermediate_size=6144,
        num_hidden_layers=39,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        layer_norm_eps=1e-6,
        qkv_bias=True,
        initializer_range=0.02,
    )
    qformer = Blip2QFormerConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        layer_norm_eps=1e-12,
        cross_attention_frequency=2,
        use_qformer_text_input=True,
    )
    return SPRCConfig(vision_config=vision, qformer_config=qformer, num_query_tokens=32)


PRESETS = {"tiny": tiny_config, "blip2-vitg": blip2_vitg_config}


def preset_config(name: str, vocab_size: int) -> SPRCConfig:
    """The configuration of a named preset, for a tokenizer with `vocab_size` entries."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name](vocab_size)


def blip2_config(sizes: SPRCConfig) -> Blip2Config:
    """The transformers BLIP-2 configuration with these sizes: how the hub's retrieval checkpoint is laid out."""
    return Blip2Config(vision_config=sizes.vision_config.to_dict(), qformer_config=sizes.qformer_config.to_dict(),
                       num_query_tokens=sizes.num_query_tokens, image_text_hidden_size=sizes.image_text_hidden_size)
