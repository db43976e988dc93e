"""How much GPU memory a training step needs, before a GPU is rented: the planner behind `python -m sprc_lib plan`.

Exact from the sizes: the weights (the frozen ViT in fp16, the rest in fp32), the gradients and
AdamW's two moments of every trainable tensor. Measured: the bytes autograd saves for the backward,
counted with saved-tensor hooks on a real forward of a small batch (the trainable part, from cached
ViT tokens, under bf16 autocast on the CPU: 2-byte activations, as a GPU's fp16 or bf16 autocast keeps
them; the ViT stays unallocated), fitted as a constant plus a cost per triplet. From first principles:
the frozen ViT's transient peak when training from pixels, and what the gradient cache adds (the
whole batch's representations and their gradients, and from pixels the ViT tokens its second pass reads).

The prediction is the peak of `torch.cuda.max_memory_allocated`; a GPU also holds the CUDA context
and the allocator's slack, so a plan fits a GPU when 1.1 x the peak + 0.5 GiB is below its memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sprc_lib.env import autocast, return_host_memory
from sprc_lib.model import SPRCConfig, SPRCModel
from sprc_lib.model.blip2 import is_vit_name
from sprc_lib.model.synthetic import random_triplets

GIB = 2**30
# Memory as torch reports it (GiB) on the GPUs a course user meets: Colab's free T4, L4, A100.
GPUS = {"T4 16 GB": 15.0, "L4 24 GB": 22.0, "A100 40 GB": 39.4}
CONTEXT_BYTES, SLACK = 0.5 * GIB, 1.1


def trainable_model(config: SPRCConfig, seed: int = 0, device: str | torch.device = "cpu") -> SPRCModel:
    """The model with every part but the frozen ViT allocated on `device` (random weights): what a step
    from cached ViT tokens runs."""
    with torch.device("meta"):
        model = SPRCModel(config)
    torch.manual_seed(seed)
    for name, module in model.named_children():
        if name != "vision_model":
            module.to_empty(device=device)
    model.vision_model.post_layernorm.to_empty(device=device)
    for name, param in list(model.named_parameters(recurse=False)):  # query/prompt tokens, temp
        setattr(model, name, nn.Parameter(torch.empty(param.shape, device=device), requires_grad=param.requires_grad))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "temp":
                p.fill_(config.temp_init)
            elif not is_vit_name(name):
                p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0 if name.endswith("weight") else 0.0)
    for name, buffer in model.named_buffers():
        if not name.startswith("vision_model.") and buffer.is_floating_point():
            buffer.zero_()
    model.embeddings.position_ids.copy_(torch.arange(model.embeddings.position_ids.shape[-1])[None])
    return model.train()


def saved_bytes(model: SPRCModel, batch: int, checkpointing: bool = False, seed: int = 0) -> int:
    """The bytes of the tensors autograd keeps for the backward of one forward of `batch` cached triplets
    (parameters themselves not counted), under bf16 autocast."""
    model.checkpoint_qformer(checkpointing)
    config = model.config
    triplets = random_triplets(config, batch, seed)
    shape = (2, batch, model.vision_model.embeddings.num_positions, config.vision_config.hidden_size)
    tokens = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    params = {p.data_ptr() for p in model.parameters() if p.device.type != "meta"}
    seen: dict[int, int] = {}

    kept: list[torch.UntypedStorage] = []  # alive until the forward ends, so no two storages share an address

    def pack(tensor: torch.Tensor) -> None:
        if tensor.device.type != "meta" and tensor.data_ptr() not in params:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()  # a storage saved twice is held once
            kept.append(storage)
        # The graph keeps nothing: no backward runs here, and a graph holding its own outputs would never be
        # freed (an output saved for its own backward makes a cycle that Python's collector cannot see).

    def unpack(_: None) -> torch.Tensor:
        raise RuntimeError("saved_bytes measures a forward; it runs no backward")

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack), autocast(torch.device("cpu"), torch.bfloat16):
        model.losses(model({"reference": tokens[0], "target": tokens[1], "input_ids": triplets["input_ids"],
                            "attention_mask": triplets["attention_mask"]}))
    model.checkpoint_qformer(False)
    return sum(seen.values())


@dataclass(frozen=True)
class Plan:
    """A training step's predicted peak memory, by part (bytes)."""

    batch_size: int
    micro_batch: int
    cached: bool
    checkpointing: bool
    weights: int
    gradients: int
    optimizer: int
    activations: int  # saved for the backward, one micro-batch
    per_triplet: int  # of which each further triplet adds this
    vit: int  # the frozen ViT's transient peak (training from pixels)
    gradient_cache: int  # the whole batch's representations and their gradients (from pixels: its ViT tokens too)
    split_cost: int  # what the gradient cache would hold: any micro-batch smaller than the batch pays it

    @property
    def peak(self) -> int:
        return (self.weights + self.gradients + self.optimizer + self.activations + self.vit
                + self.gradient_cache)

    def fits(self, gib: float) -> bool:
        return SLACK * self.peak + CONTEXT_BYTES <= gib * GIB

    def largest_micro_batch(self, gib: float) -> int:
        """The largest micro-batch of this batch that fits a GPU of `gib` (0: none does); the batch itself when
        it fits at once, without the gradient cache that any smaller micro-batch needs."""
        room = (gib * GIB - CONTEXT_BYTES) / SLACK - (self.weights + self.gradients + self.optimizer)
        fixed = self.activations - self.per_triplet * self.micro_batch
        each = self.per_triplet + self.vit / self.micro_batch
        if fixed + each * self.batch_size <= room:
            return self.batch_size
        return max(0, min(self.batch_size - 1, int((room - self.split_cost - fixed) // each)))


def activation_cost(config: SPRCConfig, checkpointing: bool = False) -> tuple[int, int]:
    """(bytes saved at 2 triplets, bytes each further triplet adds), measured on forwards of 2 and 4 triplets."""
    model = trainable_model(config)
    small, large = saved_bytes(model, 2, checkpointing), saved_bytes(model, 4, checkpointing)
    del model
    return_host_memory()  # the model measured is gone: at the real size, 1.3 GB would stay in the heap
    return small, (large - small) // 2


def plan_memory(config: SPRCConfig, batch_size: int, micro_batch: int | None = None, cached: bool = True,
         checkpointing: bool = False, cost: tuple[int, int] | None = None) -> Plan:
    """The predicted peak of one training step at `batch_size` (in micro-batches of `micro_batch`);
    `cost` is `activation_cost(config, checkpointing)`, measured here when not given."""
    micro = min(micro_batch or batch_size, batch_size)
    with torch.device("meta"):
        sizes = SPRCModel(config)
    vit = sum(p.numel() for n, p in sizes.named_parameters() if is_vit_name(n))
    trainable = sum(p.numel() for p in sizes.parameters() if p.requires_grad)
    frozen_rest = sum(p.numel() for n, p in sizes.named_parameters() if not is_vit_name(n) and not p.requires_grad)
    small, per_triplet = cost or activation_cost(config, checkpointing)
    activations = small + per_triplet * (micro - 2)
    v, q = config.vision_config, config.qformer_config
    tokens = sizes.vision_model.embeddings.num_positions
    # Training from pixels: per image in flight, its pixels (fp32), the fp16 ViT's hidden states, the largest
    # block intermediate and the attention scores; the reference and target of the micro-batch run one by one.
    per_image = (3 * v.image_size**2 * 4 + tokens * (3 * v.hidden_size + v.intermediate_size) * 2
                 + v.num_attention_heads * tokens**2 * 2)
    vit_peak = 0 if cached else micro * per_image
    d, nq = config.image_text_hidden_size, config.num_query_tokens
    reps = batch_size * (2 * d + nq * d + q.hidden_size) * 2 * 2  # half-precision values and their gradients
    scores = 2 * batch_size * batch_size * nq * 4 * 2  # the two score matrices of the whole-batch loss
    kept_tokens = 0 if cached else 2 * batch_size * tokens * v.hidden_size * 2  # from pixels: the ViT runs once
    return Plan(batch_size, micro, cached, checkpointing, weights=vit * 2 + (trainable + frozen_rest) * 4,
                gradients=trainable * 4, optimizer=trainable * 8, activations=activations, per_triplet=per_triplet,
                vit=vit_peak, gradient_cache=reps + scores + kept_tokens if micro < batch_size else 0,
                split_cost=reps + scores + kept_tokens)


def describe_plans(plans: list[Plan]) -> tuple[list[str], list[list[str]]]:
    """A table, one column per plan: each part in GiB, the peak, and each GPU's verdict."""
    headers = ["GiB"] + [f"batch {p.batch_size}" + (f", micro-batches of {p.micro_batch}"
                                                    if p.micro_batch < p.batch_size else "") for p in plans]
    parts = [("weights (ViT fp16, rest fp32)", "weights"), ("gradients", "gradients"),
             ("AdamW moments", "optimizer"), ("activations of one micro-batch", "activations"),
             ("frozen ViT from pixels", "vit"), ("gradient cache", "gradient_cache"), ("peak", "peak")]
    rows = [[label, *(f"{getattr(p, key) / GIB:.2f}" for p in plans)] for label, key in parts]
    for gpu, gib in GPUS.items():
        rows.append([gpu, *("fits" if p.fits(gib) else "does not fit" for p in plans)])
    rows.append(["largest micro-batch on a " + ", ".join(GPUS), *(
        " / ".join(str(p.largest_micro_batch(gib)) for gib in GPUS.values()) for p in plans)])
    return headers, rows
