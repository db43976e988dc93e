"""The authors' LAVIS-format checkpoints (`sprc_cirr.pt`, `sprc_fiq.pt`) <-> this project's module names.

The released files hold `{"epoch": int, "Blip2QformerCirAlignPrompt": state_dict}` with LAVIS names
(`visual_encoder.*`, `ln_vision.*`, `Qformer.bert.*`, ...) and the ViT in fp16. Every key is mapped
by an explicit rule; anything no rule covers is reported, never dropped silently.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Collection
from pathlib import Path

import torch
from torch import Tensor
from transformers.initialization import no_init_weights

from sprc_lib.errors import CheckpointError, MissingFileError
from sprc_lib.model.blip2 import Blip2Retrieval
from sprc_lib.model.config import SPRCConfig
from sprc_lib.model.rerank import RerankerConfig, RerankerModel
from sprc_lib.model.sprc import SPRCModel

LAVIS_MODEL_KEY = "Blip2QformerCirAlignPrompt"
LAVIS_RERANK_KEY = "Blip2QformerCirRerank"  # the authors' unreleased re-ranker (`blip2_cir_rerank`), same layout

# Keys neither model uses: the Q-Formers' language-model heads and a BERT buffer.
_DROPPED = (re.compile(r"^[QF]former\.cls\."), re.compile(r"^[QF]former\.bert\.embeddings\.position_ids$"))

# (LAVIS name, project name) templates; `{x}` stands for one dotted component and maps across unchanged.
_RULES: list[tuple[str, str]] = [
    ("visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    ("visual_encoder.patch_embed.proj.{p}", "vision_model.embeddings.patch_embedding.{p}"),
    ("visual_encoder.blocks.{n}.norm1.{p}", "vision_model.encoder.layers.{n}.layer_norm1.{p}"),
    ("visual_encoder.blocks.{n}.norm2.{p}", "vision_model.encoder.layers.{n}.layer_norm2.{p}"),
    ("visual_encoder.blocks.{n}.attn.qkv.weight", "vision_model.encoder.layers.{n}.self_attn.qkv.weight"),
    ("visual_encoder.blocks.{n}.attn.proj.{p}", "vision_model.encoder.layers.{n}.self_attn.projection.{p}"),
    ("visual_encoder.blocks.{n}.mlp.{fc}.{p}", "vision_model.encoder.layers.{n}.mlp.{fc}.{p}"),
    ("ln_vision.{p}", "vision_model.post_layernorm.{p}"),
    ("Qformer.bert.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
    ("Qformer.bert.embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight"),
    ("Qformer.bert.embeddings.LayerNorm.{p}", "qformer.layernorm.{p}"),
    ("Qformer.bert.encoder.layer.{n}.{att}.self.{qkv}.{p}", "qformer.encoder.layer.{n}.{att}.attention.{qkv}.{p}"),
    ("Qformer.bert.encoder.layer.{n}.{att}.output.{m}.{p}", "qformer.encoder.layer.{n}.{att}.output.{m}.{p}"),
    ("Qformer.bert.encoder.layer.{n}.{ffn}.dense.{p}", "qformer.encoder.layer.{n}.{ffn}.dense.{p}"),
    ("Qformer.bert.encoder.layer.{n}.{ffn}.{m}.{p}", "qformer.encoder.layer.{n}.{ffn}.{m}.{p}"),
    ("query_tokens", "query_tokens"),
    ("prompt_tokens", "prompt_tokens"),
    ("temp", "temp"),
    ("vision_proj.{p}", "vision_projection.{p}"),
    ("text_proj.{p}", "text_projection.{p}"),
    ("itm_head.{p}", "itm_head.{p}"),
]
# The re-ranker's frozen copy (`Fformer`, `*_f`) is this project's `miner`, named as the parts it copies.
_RULES += [(lavis.replace("Qformer.", "Fformer.", 1), f"miner.{project}") for lavis, project in _RULES
           if lavis.startswith("Qformer.")]
_RULES += [("query_tokens_f", "miner.query_tokens"), ("vision_proj_f.{p}", "miner.vision_projection.{p}"),
           ("text_proj_f.{p}", "miner.text_projection.{p}")]


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^.]+)", re.escape(template)))


_LAVIS_TO_PROJECT = [(_template_regex(lavis), project) for lavis, project in _RULES]
_PROJECT_TO_LAVIS = [(_template_regex(project), lavis) for lavis, project in _RULES]
_QV_BIAS = re.compile(r"visual_encoder\.blocks\.(\d+)\.attn\.([qv])_bias")
_QKV_BIAS = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.bias")


def _translate(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, target in rules:
        if m := pattern.fullmatch(key):
            return target.format(**m.groupdict())
    return None


def lavis_to_project(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename LAVIS keys -> (project state dict, keys no rule knows).

    The ViT's separate `q_bias`/`v_bias` become one `qkv.bias = cat(q_bias, 0, v_bias)`, which is how
    transformers stores the same bias-free-k attention.
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    qv: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        if any(p.match(key) for p in _DROPPED):
            continue
        if m := _QV_BIAS.fullmatch(key):
            qv.setdefault(m.group(1), {})[m.group(2)] = value
        elif (new := _translate(key, _LAVIS_TO_PROJECT)) is not None:
            out[new] = value
        else:
            unknown.append(key)
    for layer, biases in qv.items():
        if set(biases) != {"q", "v"}:
            unknown.extend(f"visual_encoder.blocks.{layer}.attn.{b}_bias (its partner is missing)" for b in biases)
            continue
        q, v = biases["q"], biases["v"]
        out[f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    return out, unknown


def project_to_lavis(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse renaming, to write a LAVIS-format file of a project model (the tiny track uses it)."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if m := _QKV_BIAS.fullmatch(key):
            q, k, v = value.chunk(3)
            if k.abs().max() > 0:
                raise CheckpointError(f"{key}: the k part of the ViT qkv bias is not zero; LAVIS has no k bias")
            out[f"visual_encoder.blocks.{m.group(1)}.attn.q_bias"] = q
            out[f"visual_encoder.blocks.{m.group(1)}.attn.v_bias"] = v
        elif (new := _translate(key, _PROJECT_TO_LAVIS)) is not None:
            out[new] = value
        else:
            raise CheckpointError(f"{key}: no LAVIS name for this project key")
    return out


def read_checkpoint(path: str | Path, mmap: bool = True) -> object:
    """A `.pt` file's contents, memory-mapped (a 4 GB file costs no RAM until read; `mmap=False` reads it whole),
    tensors and plain data only.

    A file that is not a PyTorch checkpoint, is cut short, or holds Python objects besides tensors and
    plain data (loading those could run code) is refused with a CheckpointError naming it.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file; pass the .pt file itself")
    if not path.is_file():
        raise MissingFileError(f"{path}: no such checkpoint file (download sprc_cirr.pt / sprc_fiq.pt first, or "
                               "pass a run's checkpoint.pt)")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:  # an old (non-zip) file cannot be memory-mapped: read it whole
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # no class or function to run: not a pickle (random bytes, another format)
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint; download it again") from err
        raise CheckpointError(f"{path}: holds Python objects besides tensors and plain data; refused, since "
                              "loading them could run code. Use a file saved by this library or the authors'") from err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as err:  # KeyError: a text file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint; download it again, or pass a saved "
                              "model folder or a run's checkpoint.pt") from err


def lavis_state_dict(obj: object, source: str) -> dict[str, Tensor]:
    """The state dict inside a released file's contents, or the contents themselves when bare."""
    for key in (LAVIS_MODEL_KEY, LAVIS_RERANK_KEY):
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: expected a state dict or {{'{LAVIS_MODEL_KEY}': state_dict}}")
    return obj


def check_and_load(model: Blip2Retrieval, state_dict: dict[str, Tensor], source: str, unknown: list[str],
                   left_out: Collection[str] = (), assign: bool = False, vit_from: Blip2Retrieval | None = None,
                   read: Callable[[str], Tensor] | None = None) -> None:
    """Load `state_dict` into `model` only if every key and shape fits; otherwise list all problems.

    `left_out`: tensors the source leaves out on purpose (the frozen weights a run checkpoint does not carry),
    which `model` already holds. `assign`: the model takes the tensors over instead of copying them (a model
    built without init then never holds a second copy of the weights). `vit_from`: a model whose frozen ViT
    `model` uses instead of loading its own, when the state's ViT equals it (`Blip2Retrieval.share_vit`).
    `read`: the state's tensors read again from their files, for the checks (see `check_finite`).
    """
    read = read or state_dict.__getitem__
    if vit_from is not None and model.share_vit(vit_from, read):
        left_out = {*left_out, *model.vit_names()}
        state_dict = {k: v for k, v in state_dict.items() if k not in left_out}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict) - set(left_out))
    unexpected = sorted(set(unknown) | (set(state_dict) - set(expected)) | (set(left_out) - set(expected)))
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = [f"{source} does not fit this model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                parts.append(f"  {title} ({len(keys)}): " + ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else ""))
        parts.append("  Check the preset/config (sizes) against the file, or whether it is an SPRC checkpoint at all.")
        raise CheckpointError("\n".join(parts))
    check_finite(state_dict, source, read)
    if assign:
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()}, strict=False, assign=True)
        return
    with torch.no_grad():
        for key, value in state_dict.items():
            expected[key].copy_(value.to(expected[key].dtype))


def check_finite(state_dict: dict[str, Tensor], source: str, read: Callable[[str], Tensor] | None = None) -> None:
    """Refuse weights holding NaN or infinity: a model loaded with them scores every image NaN, far from here.

    `read(name)`: the tensor read again from its file (KeyError where the file lacks it). For a memory-mapped
    state, checking copies read that way leaves the state's own pages unread: at ViT-g's size, the 4 GB of a
    frozen ViT that a run from the feature cache never needs stay out of RAM.
    """
    for key, mapped in state_dict.items():
        try:
            value = read(key) if read is not None else mapped
        except KeyError:  # not in the files (a fresh tensor): the state's own
            value = mapped
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{source}: tensor {key} holds {bad:,} NaN or infinite value(s) of "
                                  f"{value.numel():,}; the file is damaged or was saved from a diverged run: "
                                  "download it again, or use another checkpoint")


def load_lavis_state(obj: object, config: SPRCConfig, source: str, vit_from: Blip2Retrieval | None = None
                     ) -> SPRCModel | RerankerModel:
    """A released file's contents -> the model `config` describes (SPRC, or the re-ranker for a
    `RerankerConfig`) with its sizes, checked against every tensor (`vit_from`: see `check_and_load`)."""
    project, unknown = lavis_to_project(lavis_state_dict(obj, source))
    with no_init_weights():  # every tensor is overwritten below (or the load fails)
        model = RerankerModel(config) if isinstance(config, RerankerConfig) else SPRCModel(config)
    check_and_load(model, project, source, unknown, vit_from=vit_from)
    return model


def load_lavis_checkpoint(path: str | Path, config: SPRCConfig) -> SPRCModel | RerankerModel:
    """A released file (`sprc_cirr.pt`, `sprc_fiq.pt`, or a `blip2_cir_rerank` one) -> the model at `config`'s sizes."""
    return load_lavis_state(read_checkpoint(path), config, str(path))


# LAVIS' `convert_weights_to_fp16` halves the ViT's Conv2d/Linear tensors only; norms, tokens and q/v biases stay fp32.
_LAVIS_FP16 = re.compile(
    r"visual_encoder\.(patch_embed\.proj|blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc[12]))\.(weight|bias)"
)


def save_lavis_checkpoint(model: SPRCModel | RerankerModel, path: str | Path, epoch: int = 0) -> Path:
    """Write a model in the released files' layout and dtypes (the re-ranker under its class's key, as the
    authors' LAVIS would save it), e.g. to rehearse the reproduce path."""
    state = project_to_lavis({k: v.detach().cpu() for k, v in model.state_dict().items()})
    state = {k: v.half() if _LAVIS_FP16.fullmatch(k) else v for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = LAVIS_RERANK_KEY if isinstance(model, RerankerModel) else LAVIS_MODEL_KEY
    torch.save({"epoch": epoch, key: state}, path)
    return path
