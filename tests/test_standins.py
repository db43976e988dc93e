"""The full track's stand-ins are in the real formats: what a real full run reads, it reads the same way."""

from __future__ import annotations

import torch
from support.standins import build_standins
from transformers import Blip2ForImageTextRetrieval

from sprc_lib.course.setup import LOCATIONS
from sprc_lib.data.schema import DATASETS, check_root
from sprc_lib.model.lavis import LAVIS_MODEL_KEY, read_checkpoint
from sprc_lib.model.loading import load_model, model_sizes
from sprc_lib.model.tokenizer import load_tokenizer


def test_the_standins_are_what_full_mode_reads(tmp_path):
    env = build_standins(tmp_path)
    assert set(env) - {"SPRC_MODE"} <= set(LOCATIONS) and env["SPRC_MODE"] == "full"
    for dataset in DATASETS:
        check_root(env["SPRC_DATA"], dataset)
    blip = Blip2ForImageTextRetrieval.from_pretrained(env["SPRC_BLIP2"])  # Salesforce/blip2-itm-vit-g's class
    words = load_tokenizer(env["SPRC_BLIP2"])
    assert type(words).__name__ == "BertTokenizer" and words.bos_token == "[DEC]"  # BLIP-2's text side
    for short in ("CIRR", "FIQ"):
        released = read_checkpoint(env[f"SPRC_{short}_CHECKPOINT"])
        assert set(released) == {"epoch", LAVIS_MODEL_KEY}  # the authors' files' layout
        assert released[LAVIS_MODEL_KEY]["visual_encoder.blocks.0.attn.qkv.weight"].dtype == torch.float16
        model = load_model(env[f"SPRC_{short}_CHECKPOINT"], model_sizes(env["SPRC_BLIP2"], len(words)))
        trained = load_model(env[f"SPRC_{short}_MODEL"])
        assert torch.equal(model.prompt_tokens, trained.prompt_tokens)
    assert blip.config.num_query_tokens == model.config.num_query_tokens
