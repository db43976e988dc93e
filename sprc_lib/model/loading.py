"""One door for every source of weights: a preset from scratch, BLIP-2, a released SPRC file, a saved model."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import safe_open
from torch import Tensor
from transformers import BertTokenizer, Blip2Config, Blip2ForImageTextRetrieval
from transformers.initialization import no_init_weights

from sprc_lib.env import map_large_blocks
from sprc_lib.errors import CheckpointError, MissingFileError, UserError
from sprc_lib.files import atomic_path
from sprc_lib.model import run_checkpoint
from sprc_lib.model.blip2 import Blip2Retrieval
from sprc_lib.model.config import PRESETS, SPRCConfig, preset_config
from sprc_lib.model.fingerprint import weights_fingerprint
from sprc_lib.model.lavis import (
    LAVIS_RERANK_KEY,
    check_and_load,
    check_finite,
    lavis_state_dict,
    load_lavis_state,
    read_checkpoint,
)
from sprc_lib.model.rerank import RerankerConfig, RerankerModel, reranker_config, reranker_from_retrieval
from sprc_lib.model.sprc import AUXILIARY, SPRCModel
from sprc_lib.model.tokenizer import load_tokenizer

BLIP2_RETRIEVAL = "Salesforce/blip2-itm-vit-g"
BLIP2_VOCABULARY = 30523  # bert-base-uncased and [DEC]
LAVIS_WORD_EMBEDDINGS = "Qformer.bert.embeddings.word_embeddings.weight"


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


def blip2_sizes(name_or_path: str | Path = BLIP2_RETRIEVAL, vocab_size: int | None = None) -> SPRCConfig:
    """SPRC's sizes for a BLIP-2 checkpoint (its config.json alone): what a released `.pt`, which carries
    no sizes, is read with; `vocab_size` overrides the Q-Former's (the tokenizer's length)."""
    config = sprc_config_from_blip2(_from_folder(Blip2Config.from_pretrained, name_or_path))
    if vocab_size is not None:
        config.qformer_config.vocab_size = vocab_size
    return config


def load_blip2_retrieval(name_or_path: str | Path = BLIP2_RETRIEVAL, vit_from: Blip2Retrieval | None = None
                         ) -> SPRCModel:
    """BLIP-2 stage-1 weights (ViT + Q-Former + projections) as SPRC's starting point.

    Only SPRC's additions start fresh: `prompt_tokens` (normal, std 0.02) and `temp` (0.07). The hub
    checkpoint has no `temp`; LAVIS' own pretrain file does and the reference starts from its value.
    `vit_from`: see `check_and_load`.
    """
    blip = _from_folder(lambda name: Blip2ForImageTextRetrieval.from_pretrained(name, dtype=torch.float32),
                        name_or_path)
    with no_init_weights():  # SPRC takes BLIP-2's tensors over: random weights drawn first would double the memory
        model = SPRCModel(sprc_config_from_blip2(blip.config))
    state = blip.state_dict()
    del blip
    prompt = torch.empty_like(model.prompt_tokens)
    torch.nn.init.normal_(prompt, std=model.config.qformer_config.initializer_range)
    state.update({"prompt_tokens": prompt, "temp": torch.tensor(float(model.config.temp_init))})
    read = _file_reader(name_or_path)
    check_and_load(model, state, str(name_or_path), unknown=[], assign=True, vit_from=vit_from, read=read)
    _remember_file(model, read, vit_from)
    return model


def _remember_file(model: Blip2Retrieval, read: Callable[[str], Tensor] | None, vit_from: Blip2Retrieval | None
                   ) -> None:
    """Note the file the model's ViT was mapped from, unless it now holds `vit_from`'s ViT (read where that
    one's is)."""
    if read is not None and not (vit_from is not None and model.shares_vit_with(vit_from)):
        model.remember_vit_source(read)


def _file_reader(source: str | Path) -> Callable[[str], Tensor] | None:
    """One tensor at a time from the safetensors of a save_pretrained folder (or of a hub id's cached copy), read
    through a mapping of its own that closes after each read. Comparing or checking a model's weights this way
    leaves the model's own memory-mapped tensors unread, so they cost no RAM until they are used (`share_vit`,
    `check_finite`, `remember_vit_source`). None where there are no safetensors; a name they lack: KeyError."""
    folder = Path(source)
    if not folder.is_dir() and _is_hub_id(source):
        for name in ("model.safetensors.index.json", "model.safetensors"):
            found = try_to_load_from_cache(str(source), name)
            if isinstance(found, str):
                folder = Path(found).parent
                break
    index = folder / "model.safetensors.index.json"
    if not index.is_file() and not (folder / "model.safetensors").is_file():
        return None
    files = json.loads(index.read_text())["weight_map"] if index.is_file() else None

    def read(name: str) -> Tensor:
        with safe_open(folder / (files[name] if files else "model.safetensors"), "pt") as f:
            if name not in f.keys():  # noqa: SIM118 (a safe_open handle has no __contains__)
                raise KeyError(name)
            return f.get_tensor(name)

    return read


def _is_hub_id(source: str | Path) -> bool:
    """`owner/name`, as the hub names models (not a path a user typed)."""
    return not str(source).startswith(("/", ".", "~")) and str(source).count("/") == 1


def _model_type(path: Path) -> str | None:
    """The `model_type` of a `save_pretrained` folder's config.json, None if it has none."""
    config = path / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("model_type")
    except (ValueError, AttributeError) as err:
        raise CheckpointError(f"{config}: not a valid model config ({err}); save or download the model again") from err


def _from_folder(load, source: str | Path):
    """A transformers `from_pretrained` whose failures name the folder (or hub id) and say what to do."""
    try:
        return load(str(source))
    except pickle.UnpicklingError as err:  # a pytorch_model.bin holding more than tensors
        where = next(iter(sorted(Path(source).glob("*.bin"))), source) if Path(source).is_dir() else source
        raise CheckpointError(f"{where}: holds Python objects besides tensors and plain data; refused, since "
                              "loading them could run code. Save the model again as safetensors (save_pretrained), "
                              "or use a model saved by this library") from err
    except (OSError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{source}: cannot load this model ({first}). A hub id needs the network once (or a "
                              "local copy); a folder must hold what save_pretrained wrote") from err


def model_from_saved(model_config: dict, state: dict, frozen_from: dict | None, source: str,
                     vit_from: Blip2Retrieval | None = None) -> SPRCModel | RerankerModel:
    """The model a training checkpoint holds (its `model_config` says which and how big), every tensor checked.

    A checkpoint that leaves out its frozen weights (`frozen_from`, see `frozen_weights`) gets them from the
    run's base model, built as the run built it, once that model's files are found to be the run's by content.
    `vit_from`: see `check_and_load`. A run's per-sample prompts are training-only and stay out (the trainer
    adds them back, `SPRCModel.add_auxiliary_prompts`).
    """
    state = {k: v for k, v in state.items() if k != AUXILIARY}
    if frozen_from is not None:
        model = base_model(frozen_from, source, vit_from)
        check_and_load(model, state, source, unknown=[], left_out=frozen_from["names"])
        return model
    model_class = RerankerModel if model_config.get("model_type") == RerankerConfig.model_type else SPRCModel
    with no_init_weights():  # every tensor comes from the checkpoint
        model = model_class(model_class.config_class(**model_config))
    check_and_load(model, state, source, unknown=[], vit_from=vit_from)
    return model


def frozen_weights(model: SPRCModel | RerankerModel, base: str | Path, preset: str, weights: dict[str, str]) -> dict:
    """What a run checkpoint records instead of the frozen tensors it leaves out (the ViT, the re-ranker's miner):
    their names and the base model they come from, by path and by content (`weights`: its fingerprint)."""
    where = Path(base)
    return {"names": sorted(n for n, p in model.named_parameters() if not p.requires_grad),
            "source": str(where.resolve()) if where.exists() else str(base), "weights": weights,
            "reranker": isinstance(model, RerankerModel), "preset": preset,
            "vocab_size": model.config.qformer_config.vocab_size}


def base_model(frozen_from: dict, source: str, vit_from: Blip2Retrieval | None = None) -> SPRCModel | RerankerModel:
    """The run's starting model, rebuilt from its base weights (`frozen_weights`), which must be the run's."""
    base = frozen_from["source"]
    if weights_fingerprint(base) != frozen_from["weights"]:
        found = "are not there" if not Path(base).exists() and not _is_hub_id(base) else "differ from the run's"
        raise CheckpointError(f"{source}: holds the run's trained weights only; its frozen ones (the ViT"
                              f"{', the miner' if frozen_from['reranker'] else ''}) come from the run's base model "
                              f"{base}, whose files {found}. Put that model back there (or resume with `model_path` "
                              "pointing at a copy of it), or evaluate the run's best/ or final/ instead")
    sizes = preset_config(frozen_from["preset"], frozen_from["vocab_size"])
    return (load_reranker if frozen_from["reranker"] else load_model)(base, sizes, vit_from)


def load_model(source: str | Path, config: SPRCConfig | None = None, vit_from: Blip2Retrieval | None = None
               ) -> SPRCModel | RerankerModel:
    """Load the weights of SPRC (or of the SPRC² re-ranker, where the source holds one) from any of the
    places they come from.

    - a directory written by `save_pretrained` (this project's format: safetensors + config.json),
      such as a training run's `best/` or `final/`, or `convert`'s output;
    - a training run's `checkpoint.pt` (it carries its own sizes);
    - a `.pt`/`.pth` file released by the authors (LAVIS names), which needs `config`
      (e.g. `preset_config("blip2-vitg", 30523)`) since the file carries no sizes;
    - a BLIP-2 retrieval checkpoint (a directory, or a hub id such as `Salesforce/blip2-itm-vit-g`).

    Anything else, or a file that is damaged, raises a CheckpointError that names it.

    `vit_from`: a model already in memory whose frozen ViT the loaded one uses, instead of its own, when the
    source's ViT is the same (`Blip2Retrieval.share_vit`): stage 1 beside a re-ranker holds one ViT, not two.
    """
    model = _load_source(source, config, vit_from)
    map_large_blocks(sum(p.numel() for p in model.parameters()))  # at the real size, freed activations leave too
    return model


def _load_source(source: str | Path, config: SPRCConfig | None, vit_from: Blip2Retrieval | None
                 ) -> SPRCModel | RerankerModel:
    path = Path(source)
    model_type = _model_type(path) if path.is_dir() else None
    if model_type in (SPRCConfig.model_type, RerankerConfig.model_type):
        model_class = SPRCModel if model_type == SPRCConfig.model_type else RerankerModel
        model = _from_folder(model_class.from_pretrained, path)  # memory-mapped: a tensor costs RAM once read
        read = _file_reader(path)
        if vit_from is not None and read is not None:
            model.share_vit(vit_from, read)  # its own ViT, never read, is dropped
        check_finite(model.state_dict(), str(path), read)
        _remember_file(model, read, vit_from)
        return model
    if path.suffix in {".pt", ".pth"} or path.is_file():
        saved = read_checkpoint(path)
        if run_checkpoint.is_run_checkpoint(saved):
            return model_from_saved(*run_checkpoint.model_parts(saved), str(path), vit_from)
        if config is None:
            raise CheckpointError(f"{path}: a LAVIS-format checkpoint carries no sizes; pass a preset or a config")
        if isinstance(saved, dict) and LAVIS_RERANK_KEY in saved:  # the authors' re-ranker layout
            config = reranker_config(config)
        return load_lavis_state(saved, config, str(path), vit_from)
    if model_type == Blip2Config.model_type:
        return load_blip2_retrieval(path, vit_from)
    if not path.exists() and _is_hub_id(source):
        return load_blip2_retrieval(str(source), vit_from)  # a hub id such as Salesforce/blip2-itm-vit-g
    if not path.exists():
        raise CheckpointError(f"{source}: no such file or folder; pass a saved model folder, a run's "
                              "checkpoint.pt, a released sprc_*.pt, or a BLIP-2 folder or hub id")
    raise CheckpointError(
        f"{source}: not a saved SPRC model (config.json with model_type 'sprc'), a training checkpoint, "
        "a released .pt file, or a BLIP-2 retrieval checkpoint"
    )


def load_reranker(source: str | Path, config: SPRCConfig | None = None, vit_from: Blip2Retrieval | None = None
                  ) -> RerankerModel:
    """An SPRC² re-ranker: a saved one (folder, run checkpoint, authors' layout), or a new one started from
    any BLIP-2-shaped weights `load_model` reads (a BLIP-2 retrieval checkpoint, the tiny BLIP-2, an SPRC
    model), their ITM head included, with its miner copied from them."""
    model = load_model(source, config, vit_from)
    return model if isinstance(model, RerankerModel) else reranker_from_retrieval(model)


def new_model(preset: str, vocab_size: int, seed: int = 0) -> SPRCModel:
    """A preset built from scratch with random weights (the tiny track, benchmarks)."""
    torch.manual_seed(seed)
    return SPRCModel(preset_config(preset, vocab_size))


def load_model_and_tokenizer(model_path: str | Path, tokenizer: str | Path | None = None,
                             preset: str = "blip2-vitg", role: str = "model_path",
                             vit_from: Blip2Retrieval | None = None) -> tuple[SPRCModel | RerankerModel, BertTokenizer]:
    """A model to evaluate and its tokenizer: the one beside it (a saved model, a run's `tokenizer/`), or
    `tokenizer`, or BLIP-2's for a released file. `preset` gives the sizes a released `.pt` lacks.

    `role` is the setting that names the model: `model_path` (SPRC, stage 1) or `rerank_model` (the SPRC²
    re-ranker); a model of the other kind is refused with a message naming the setting it belongs to.
    `vit_from`: see `load_model`.
    """
    if not Path(model_path).exists() and not _is_hub_id(model_path):
        raise MissingFileError(f"`{role}` {model_path}: no such file or folder; pass a saved model folder, a "
                               "run's checkpoint.pt, or a released .pt file")
    known = (SPRCConfig.model_type, RerankerConfig.model_type, Blip2Config.model_type)
    model_type = _model_type(Path(model_path)) if Path(model_path).is_dir() else None
    if Path(model_path).is_dir() and model_type not in known:
        raise CheckpointError(f"`{role}` {model_path}: not a saved model (no config.json of an SPRC or BLIP-2 "
                              "model); pass a run's best/ or final/, a converted model, or a checkpoint file")
    wanted, other = (RerankerModel, "model_path") if role == "rerank_model" else (SPRCModel, "rerank_model")
    if model_type in (SPRCConfig.model_type, RerankerConfig.model_type) and (
            model_type != wanted.config_class.model_type):
        _wrong_kind(role, model_path, other)  # said from the folder's config, before its weights load
    model_dir = Path(model_path) if Path(model_path).is_dir() else Path(model_path).parent
    beside = [d for d in (model_dir, model_dir / "tokenizer") if (d / "tokenizer_config.json").is_file()]
    source = tokenizer or (beside[0] if beside else None)
    if source is None and preset == "tiny":
        raise CheckpointError(f"{model_path}: no tokenizer beside it; pass `tokenizer` (the tiny model's folder)")
    text_tokenizer = load_tokenizer(source or BLIP2_RETRIEVAL)
    model = load_model(model_path, preset_config(preset, len(text_tokenizer)), vit_from)
    if not isinstance(model, wanted):
        _wrong_kind(role, model_path, other)
    return model, text_tokenizer


def _wrong_kind(role: str, model_path: str | Path, other: str) -> NoReturn:
    what = "an SPRC² re-ranker" if role == "model_path" else "an SPRC (stage-1) model"
    raise CheckpointError(f"`{role}` {model_path}: this is {what}; pass it as `{other}`")


def model_sizes(preset: str, vocab_size: int) -> SPRCConfig:
    """The sizes `preset` names: a preset (`tiny`, `blip2-vitg`), or a BLIP-2 folder or hub id (its config)."""
    return preset_config(preset, vocab_size) if preset in PRESETS else blip2_sizes(preset, vocab_size)


def convert_lavis_checkpoint(lavis_checkpoint: str | Path, out: str | Path, preset: str = "blip2-vitg",
                             tokenizer: str | Path | None = None, overwrite: bool = False) -> int:
    """A released LAVIS file (`sprc_cirr.pt`, ...) saved in this project's format with its tokenizer, at the
    sizes `preset` names (see `model_sizes`); returns the number of parameters converted.

    The model is written beside `out` and renamed into place, so an interruption leaves no half model;
    an `out` that holds anything is replaced only with `overwrite`, and only when it is a model folder.
    """
    out = Path(out)
    check_model_destination(out, overwrite)
    saved = read_checkpoint(lavis_checkpoint)
    text_tokenizer = _convert_tokenizer(tokenizer, _vocabulary(saved, str(lavis_checkpoint)), lavis_checkpoint)
    model = load_lavis_state(saved, model_sizes(preset, len(text_tokenizer)), str(lavis_checkpoint))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        text_tokenizer.save_pretrained(tmp)
    return sum(p.numel() for p in model.parameters())


def check_model_destination(out: Path, overwrite: bool) -> None:
    """`convert --out`: a new or empty folder, or (with --overwrite) a model folder to replace."""
    if out.exists() and not out.is_dir():
        raise UserError(f"`out` {out}: that is a file; convert writes a model folder (config.json, weights, "
                        "tokenizer): choose a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not held:
        return
    listing = ", ".join(held[:6]) + (f" and {len(held) - 6} more" if len(held) > 6 else "")
    if not overwrite:
        raise UserError(f"`out` {out} already holds files ({listing}): choose another `out`, or replace the model "
                        "there with `overwrite`")
    if _model_type(out) not in (SPRCConfig.model_type, RerankerConfig.model_type):
        raise UserError(f"`out` {out}: `overwrite` replaces a model folder, and this one holds no SPRC model "
                        f"({listing}); choose another `out`")


def _vocabulary(saved: object, source: str) -> int:
    """The number of tokens a released file's Q-Former embeds (the tokenizer it needs has as many)."""
    embeddings = lavis_state_dict(saved, source).get(LAVIS_WORD_EMBEDDINGS)
    return BLIP2_VOCABULARY if embeddings is None else embeddings.shape[0]  # a missing one: named by the load


def _convert_tokenizer(tokenizer: str | Path | None, vocabulary: int, source: str | Path) -> BertTokenizer:
    """The tokenizer to save beside a converted model: `--tokenizer`, else BLIP-2's when the file has its
    vocabulary; a file with another vocabulary (a tiny model) names --tokenizer at once, without the hub."""
    if tokenizer is None and vocabulary != BLIP2_VOCABULARY:
        raise UserError(f"{source}: its vocabulary has {vocabulary:,} tokens, BLIP-2's tokenizer "
                        f"{BLIP2_VOCABULARY:,}: pass `tokenizer` with this model's own (for a tiny model, the tiny "
                        "BLIP-2's folder)")
    text_tokenizer = load_tokenizer(tokenizer or BLIP2_RETRIEVAL)
    if len(text_tokenizer) != vocabulary:
        raise UserError(f"`tokenizer` {tokenizer or BLIP2_RETRIEVAL}: {len(text_tokenizer):,} tokens, but {source} "
                        f"embeds {vocabulary:,}; pass the tokenizer the model was trained with")
    return text_tokenizer
