"""`python -m sprc_lib bench`: what the frozen-ViT feature cache buys, measured side by side in one process.

Both paths run the same model on the same batch: the reference path recomputes the frozen ViT on the
reference and target images every step; the cached path reads the ViT's tokens (as the cache stores
them) and runs only the trainable part. Index extraction and query scoring are timed too. Numbers are
ratios within one run on one machine; compare nothing across machines.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
from transformers import Blip2QFormerConfig, Blip2VisionConfig

from sprc_lib.env import autocast, autocast_dtype, pick_device
from sprc_lib.model import SPRCConfig, SPRCModel, preset_config
from sprc_lib.model.rerank import RerankerModel, reranker_config
from sprc_lib.model.synthetic import random_triplets
from sprc_lib.tables import format_table
from sprc_lib.training.recipes import TOY, Recipe
from sprc_lib.training.step import Optimisation, StepSettings, make_optimizer, optimizer_step

VOCAB = 1000
RERANK_KS = (10, 50, 200)  # SPRC²'s candidates per query: the authors re-rank CIRR's top 200


def proportional_config(vocab_size: int = VOCAB) -> SPRCConfig:
    """A CPU-sized model with the paper's proportions: the frozen ViT costs several times the trainable
    Q-Former's forward+backward per triplet (ViT-g over 257 tokens vs a BERT-base Q-Former over ~64).
    The bench prints the measured proportion."""
    config = preset_config("tiny", vocab_size)
    config.vision_config = Blip2VisionConfig(
        hidden_size=256, intermediate_size=1024, num_hidden_layers=12, num_attention_heads=8,
        image_size=96, patch_size=8, qkv_bias=True, initializer_range=0.02,
    )  # fmt: skip
    config.qformer_config = Blip2QFormerConfig(**{**config.qformer_config.to_dict(), "encoder_hidden_size": 256})
    return SPRCConfig(**config.to_dict())


def bench_config(preset: str) -> SPRCConfig:
    if preset == "proportional":
        return proportional_config()
    return preset_config(preset, 30523 if preset == "blip2-vitg" else VOCAB)


@dataclass
class Timing:
    seconds: float  # per call, median of the repeats
    peak_mb: float | None  # peak memory of one call above what was held before it


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    elif os.path.exists("/proc/self/clear_refs"):
        with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets the peak resident set (VmHWM)
            f.write("5")


def _memory(device: torch.device) -> tuple[float, float] | None:
    """(current, peak) MB: CUDA allocator stats on a GPU, the process's resident set on Linux."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    except OSError:
        return None
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def measure(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, Timing]:
    """Median time and peak memory of each function; repeats are interleaved so drift hits all alike."""
    for fn in fns.values():  # warm-up: first calls allocate and pick kernels
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _reset_peak(device)
            before = _memory(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
            after = _memory(device)
            if before and after:
                peaks[name].append(after[1] - before[0])
    return {
        k: Timing(sorted(times[k])[len(times[k]) // 2], max(peaks[k]) if peaks[k] else None) for k in fns
    }


@dataclass
class BenchResult:
    rows: list[list[str]]  # the table (first row: the header line)
    losses: list[float]  # the weighted loss of every training step taken, in order


def run_bench(preset: str = "tiny", batch_size: int = 32, repeats: int = 5, device: str = "auto",
              precision: str = "auto", seed: int = 0, recipe: Recipe = TOY["CIRR"], training_only: bool = False
              ) -> BenchResult:
    """Time the pixel and cached training steps (the trainer's step, `recipe`'s loss weights) and the ViT
    alone; then, unless `training_only`, index extraction, query scoring and re-ranking (a second model: at
    the real size on a CPU, that part alone runs for hours)."""
    dev = pick_device(device)
    dtype = autocast_dtype(precision, dev)
    torch.manual_seed(seed)
    model = SPRCModel(bench_config(preset)).to(dev)
    if dev.type == "cuda":
        model.set_vit_dtype(torch.float16)
    full = [model.config.max_txt_len] * batch_size  # every caption as long as allowed: the worst case
    batch = {k: v.to(dev) for k, v in random_triplets(model.config, batch_size, seed, lengths=full).items()}
    ref_px, tgt_px, ids, mask = batch["reference"], batch["target"], batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        ref_tok, tgt_tok = model.vit(ref_px).half(), model.vit(tgt_px).half()  # what the fp16 cache holds
    optimizer = make_optimizer(model, recipe)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    losses: list[float] = []
    settings = StepSettings.of(recipe, precision=precision)

    def step(reference: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
        tensors = {"reference": reference, "target": target, "input_ids": ids, "attention_mask": mask}

        def run() -> None:  # the trainer's own step (no schedule: the rate stays at the recipe's peak)
            done = optimizer_step(model, tensors, Optimisation(optimizer, scaler), settings)
            losses.append(done["loss"].item())
        return run

    @torch.no_grad()
    def vit_only() -> None:
        with autocast(dev, dtype):
            model.vit(ref_px), model.vit(tgt_px)

    @torch.no_grad()
    def index(images: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            model.eval()
            with autocast(dev, dtype):
                model.image_features(model.encode_image(images))
        return run

    @torch.no_grad()
    def queries() -> None:
        model.eval()
        with autocast(dev, dtype):
            gallery = model.image_features(model.encode_image(tgt_tok))
            model.scores(model.composed_features(model.encode_image(ref_tok), ids, mask), gallery)

    def rerank(k: int) -> Callable[[], None]:
        """One query's top `k` scored by the re-ranker: its reference and caption beside each candidate."""
        picks = torch.arange(k, device=dev) % batch_size

        @torch.no_grad()
        def run() -> None:
            reranker = rerankers[0]
            with autocast(dev, dtype):
                refs = reranker.encode_image(ref_tok[:1]).expand(k, -1, -1)
                reranker.match_scores(refs, reranker.encode_image(tgt_tok[picks]), ids[:1].expand(k, -1),
                                      mask[:1].expand(k, -1))
        return run

    t = measure({"reference": step(ref_px, tgt_px), "cached": step(ref_tok, tgt_tok), "vit": vit_only}, dev, repeats)
    if not training_only:
        rerankers = [RerankerModel(reranker_config(model.config)).to(dev).eval()]
        if dev.type == "cuda":
            rerankers[0].set_vit_dtype(torch.float16)
        t |= measure({"index_px": index(ref_px), "index_cache": index(ref_tok), "query": queries,
                      **{f"rerank_{k}": rerank(k) for k in RERANK_KS}}, dev, repeats)
    reference, cached, vit = t["reference"], t["cached"], t["vit"]

    def rate(t: Timing, items: int) -> str:
        return f"{items / t.seconds:,.1f}"

    def mem(t: Timing) -> str:
        return f"{t.peak_mb:,.0f}" if t.peak_mb is not None else "-"

    b = batch_size
    rows = [
        ["train step, reference (ViT every step)", rate(reference, b), mem(reference), "1.00"],
        ["train step, cached ViT tokens", rate(cached, b), mem(cached), f"{reference.seconds / cached.seconds:.2f}"],
    ]
    if not training_only:
        index_px, index_cache, query = t["index_px"], t["index_cache"], t["query"]
        rows += [
            ["index extraction from pixels", rate(index_px, b), mem(index_px), "1.00"],
            ["index extraction from cache", rate(index_cache, b), mem(index_cache),
             f"{index_px.seconds / index_cache.seconds:.2f}"],
            ["stage-1 queries (composed + scores vs batch gallery)", rate(query, b), mem(query), "-"],
            *[[f"SPRC² re-rank of one query's top {k}: {t[f'rerank_{k}'].seconds / (query.seconds / b):,.0f}x a "
               "stage-1 query", rate(t[f"rerank_{k}"], 1), mem(t[f"rerank_{k}"]), "-"] for k in RERANK_KS],
        ]
    proportion = vit.seconds / cached.seconds
    header = (
        f"preset {preset}, batch {b}, device {dev}, autocast {dtype}, median of {repeats}; "
        f"ViT forward on both images = {proportion:.1f}x the trainable step (fwd+bwd) per triplet"
    )
    rows.insert(0, [header, "", "", ""])
    return BenchResult(rows, losses)


def step_peak(preset: str, batch_size: int, micro_batch: int | None, device: str, precision: str, seed: int,
              recipe: Recipe) -> float | None:
    """Peak bytes of one training step from cached tokens (None: out of memory), in this process: run it in a
    fresh one, so that memory held from earlier work cannot hide the step's own peak."""
    from sprc_lib.training.memory import trainable_model

    dev = pick_device(device)
    dtype = autocast_dtype(precision, dev)
    config = bench_config(preset)
    model = trainable_model(config, seed, dev)
    triplets = random_triplets(config, batch_size, seed, lengths=[config.max_txt_len] * batch_size)
    shape = (2, batch_size, model.vision_model.embeddings.num_positions, config.vision_config.hidden_size)
    tokens = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).half()
    tensors = {"reference": tokens[0].to(dev), "target": tokens[1].to(dev),
               "input_ids": triplets["input_ids"].to(dev), "attention_mask": triplets["attention_mask"].to(dev)}
    optimizer = make_optimizer(model, recipe)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    _reset_peak(dev)
    before = _memory(dev)
    try:
        optimizer_step(model, tensors, Optimisation(optimizer, scaler),
                       StepSettings.of(recipe, precision=precision, micro_batch=micro_batch))
    except torch.OutOfMemoryError:
        return None
    after = _memory(dev)
    if not (before and after):
        return None
    return (after[1] if dev.type == "cuda" else after[1] - before[0]) * 2**20


def memory_bench(preset: str, batch_size: int, micro_batch: int, device: str = "auto", precision: str = "auto",
                 seed: int = 0, recipe: Recipe = TOY["CIRR"]) -> list[list[str]]:
    """Peak memory of one training step from cached ViT tokens, the whole batch at once beside micro-batches
    (the gradient cache), with the planner's prediction; random weights, the ViT never allocated.

    Each step runs in a fresh process. On a GPU the peak is `torch.cuda.max_memory_allocated` (what the
    planner predicts); on a CPU, the growth of the process's peak resident set, in fp32 or bf16 autocast:
    compare the ratios there, not the plan.
    """
    from sprc_lib.training.memory import GIB, activation_cost, plan_memory

    config = bench_config(preset)
    cost = activation_cost(config)
    rows, peaks = [], {}
    spawn = multiprocessing.get_context("spawn")
    for size in (None, micro_batch):
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as fresh:
            peaks[size] = fresh.submit(step_peak, preset, batch_size, size, device, precision, seed, recipe).result()
        planned = plan_memory(config, batch_size, size, cached=True, cost=cost).peak
        label = f"micro-batches of {size}" if size else "whole batch"
        measured = f"{peaks[size] / GIB:.2f}" if peaks[size] else "out of memory"
        rows.append([f"train step, batch {batch_size}, {label}", measured, f"{planned / GIB:.2f}"])
        peaks[f"plan {size}"] = planned
    if peaks[None] and peaks[micro_batch]:
        rows.append(["whole / micro-batched peak", f"{peaks[None] / peaks[micro_batch]:.2f}",
                     f"{peaks['plan None'] / peaks[f'plan {micro_batch}']:.2f}"])
    return rows


def print_bench(micro_batch: int | None = None, memory_only: bool = False, **kwargs) -> None:
    if not memory_only:
        rows = run_bench(**kwargs).rows
        print(rows[0][0])
        print(format_table(["what", "items/s", "peak MB", "speed-up"], rows[1:]))
    if micro_batch:
        keys = ("preset", "batch_size", "device", "precision")
        rows = memory_bench(micro_batch=micro_batch, **{k: kwargs[k] for k in keys if k in kwargs})
        where = "GPU: max_memory_allocated" if pick_device(kwargs.get("device", "auto")).type == "cuda" else (
            "CPU: peak resident set growth")
        print(f"\nMemory of one training step from cached tokens ({where}), beside the planner's GPU prediction:")
        print(format_table(["what", "measured GiB", "planned GiB"], rows))


def print_plan(preset: str, batch_size: int, micro_batch: int | None = None, cache: bool = False,
               checkpointing: bool = False) -> None:
    """`python -m sprc_lib plan`: the planner's table for the whole batch and for micro-batches (given, or the
    largest power of two that fits a T4)."""
    from sprc_lib.errors import UserError
    from sprc_lib.training.compute import describe_compute, step_flops
    from sprc_lib.training.disk import describe_disk
    from sprc_lib.training.memory import GPUS, activation_cost, describe_plans, plan_memory

    for name, value in (("--batch-size", batch_size), ("--micro-batch", micro_batch)):
        if value is not None and value < 1:
            raise UserError(f"{name} {value}: must be at least 1")
    if micro_batch is not None and micro_batch >= batch_size:
        raise UserError(f"--micro-batch {micro_batch}: must be below --batch-size {batch_size} (a micro-batch is a "
                        "part of the batch); leave it out for the whole batch at once")
    config = bench_config(preset)
    cost = activation_cost(config, checkpointing)
    options = dict(cached=cache, checkpointing=checkpointing, cost=cost)
    whole = plan_memory(config, batch_size, None, **options)
    micro = micro_batch or 2 ** max(0, whole.largest_micro_batch(next(iter(GPUS.values()))).bit_length() - 1)
    plans = [whole] + ([plan_memory(config, batch_size, micro, **options)] if micro < batch_size else [])
    print(f"{preset}, batch {batch_size}, from {'the feature cache' if cache else 'pixels'}"
          + (", Q-Former activation checkpointing" if checkpointing else "")
          + f": activations {cost[1] / 2**20:.1f} MiB per triplet (measured), predicted peak of "
          "torch.cuda.max_memory_allocated; a GPU fits it when 1.1 x peak + 0.5 GiB is below its memory")
    print(format_table(*describe_plans(plans)))
    print("\nDisk, before it fills:")
    print("\n".join(describe_disk(config)))
    print("\nTime:")
    print("\n".join(describe_compute(step_flops(config))))
