"""One door for every source of weights: a preset from scratch, BLIP-2, a released SPRC file, a saved model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import BertTokenizer, Blip2Config, Blip2ForImageTextRetrieval
from transformers.initialization import no_init_weights

from sprc_lib.model.config import SPRCConfig, preset_config
from sprc_lib.model.lavis import check_and_load, load_lavis_checkpoint, load_lavis_state, read_checkpoint
from sprc_lib.model.sprc import SPRCModel
from sprc_lib.model.tokenizer import load_tokenizer

BLIP2_RETRIEVAL = "Salesforce/blip2-itm-vit-g"


def sprc_config_from_blip2(config: Blip2Config, max_txt_len: int = 32) -> SPRCConfig:
    """SPRC sizes from a BLIP-2 config; the Q-Former must have its text FFNs (`use_qformer_text_input`)."""
    qformer = config.qformer_config.to_dict()
    qformer["use_qformer_text_input"] = True
    return SPRCConfig(
        vision_config=config.vision_config.to_dict(),
        qformer_config=qformer,
        num_query_tokens=config.num_query_tokens,
        image_text_hidden_size=config.image_text_hidden_size,
        max_txt_len=max_txt_len,
    )


def load_blip2_retrieval(name_or_path: str | Path = BLIP2_RETRIEVAL) -> SPRCModel:
    """BLIP-2 stage-1 weights (ViT + Q-Former + projections) as SPRC's starting point.

    Only SPRC's additions start fresh: `prompt_tokens` (normal, std 0.02) and `temp` (0.07). The hub
    checkpoint has no `temp`; LAVIS' own pretrain file does and the reference starts from its value.
    """
    blip = Blip2ForImageTextRetrieval.from_pretrained(str(name_or_path), dtype=torch.float32)
    model = SPRCModel(sprc_config_from_blip2(blip.config))
    state = blip.state_dict()
    fresh = model.state_dict()
    state.update({k: fresh[k] for k in ("prompt_tokens", "temp")})
    check_and_load(model, state, str(name_or_path), unknown=[])
    return model


def _is_pretrained_dir(path: Path, model_type: str) -> bool:
    config = path / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == model_type


def load_model(source: str | Path, config: SPRCConfig | None = None) -> SPRCModel:
    """Load SPRC weights from any of the places they come from.

    - a directory written by `save_pretrained` (this project's format: safetensors + config.json),
      such as a training run's `best/` or `final/`, or `convert`'s output;
    - a training run's `checkpoint.pt` (it carries its own sizes);
    - a `.pt`/`.pth` file released by the authors (LAVIS names), which needs `config`
      (e.g. `preset_config("blip2-vitg", 30523)`) since the file carries no sizes;
    - a BLIP-2 retrieval checkpoint (a directory, or a hub id such as `Salesforce/blip2-itm-vit-g`).
    """
    path = Path(source)
    if path.is_dir() and _is_pretrained_dir(path, SPRCConfig.model_type):
        return SPRCModel.from_pretrained(str(path))
    if path.suffix in {".pt", ".pth"}:
        saved = read_checkpoint(path)
        if isinstance(saved, dict) and "model_config" in saved:  # a training run's checkpoint.pt
            with no_init_weights():
                model = SPRCModel(SPRCConfig(**saved["model_config"]))
            check_and_load(model, saved["model"], str(path), unknown=[])
            return model
        if config is None:
            raise ValueError(f"{path}: a LAVIS-format checkpoint carries no sizes; pass a preset or a config")
        return load_lavis_state(saved, config, str(path))
    if path.is_dir() and _is_pretrained_dir(path, Blip2Config.model_type):
        return load_blip2_retrieval(path)
    if not path.exists() and not str(source).startswith(("/", ".", "~")) and str(source).count("/") == 1:
        return load_blip2_retrieval(str(source))  # a hub id such as Salesforce/blip2-itm-vit-g
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such file or directory")
    raise ValueError(
        f"{source}: not a saved SPRC model (config.json with model_type 'sprc'), a training checkpoint, "
        "a released .pt file, or a BLIP-2 retrieval checkpoint"
    )


def new_model(preset: str, vocab_size: int, seed: int = 0) -> SPRCModel:
    """A preset built from scratch with random weights (the tiny track, benchmarks)."""
    torch.manual_seed(seed)
    return SPRCModel(preset_config(preset, vocab_size))


def load_model_and_tokenizer(model_path: str | Path, tokenizer: str | Path | None = None,
                             preset: str = "blip2-vitg") -> tuple[SPRCModel, BertTokenizer]:
    """A model to evaluate and its tokenizer: the one beside it (a saved model, a run's `tokenizer/`), or
    `tokenizer`, or BLIP-2's for a released file. `preset` gives the sizes a released `.pt` lacks."""
    model_dir = Path(model_path) if Path(model_path).is_dir() else Path(model_path).parent
    beside = [d for d in (model_dir, model_dir / "tokenizer") if (d / "tokenizer_config.json").is_file()]
    source = tokenizer or (beside[0] if beside else None)
    if source is None and preset == "tiny":
        raise FileNotFoundError(f"no tokenizer beside {model_path}: pass --tokenizer (the tiny model's folder)")
    words = load_tokenizer(source or BLIP2_RETRIEVAL)
    return load_model(model_path, preset_config(preset, len(words))), words


def convert_lavis_checkpoint(lavis_checkpoint: str | Path, out: str | Path, preset: str = "blip2-vitg",
                             tokenizer: str | Path | None = None) -> int:
    """A released LAVIS file (`sprc_cirr.pt`, ...) saved in this project's format with its tokenizer;
    returns the number of parameters converted."""
    words = load_tokenizer(tokenizer or BLIP2_RETRIEVAL)
    model = load_lavis_checkpoint(lavis_checkpoint, preset_config(preset, len(words)))
    model.save_pretrained(out)
    words.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())
