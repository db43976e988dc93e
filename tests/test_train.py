"""The trainer: the authors' recipe numbers, exact resume, the cache path, and the sampler."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from sprc_lib.data import CIRRDataset, build_transform, collate
from sprc_lib.errors import CheckpointError
from sprc_lib.features import CachedImages, FeatureCache
from sprc_lib.model import LOSS_NAMES
from sprc_lib.model.loading import load_model
from sprc_lib.model.tokenizer import load_tokenizer, tokenize
from sprc_lib.training.build import build_run, open_run_dir
from sprc_lib.training.config import TrainConfig, resolve
from sprc_lib.training.disk import run_disk
from sprc_lib.training.recipes import PAPER, TOY, recipe_for
from sprc_lib.training.runs import CHECKPOINT, read_csv
from sprc_lib.training.sampler import EpochBatchSampler
from sprc_lib.training.step import make_optimizer, make_scheduler
from sprc_lib.training.trainer import resume_training, train


def test_recipes_are_the_references():
    cirr, fiq = PAPER["CIRR"], PAPER["FashionIQ"]
    assert (cirr.num_epochs, cirr.learning_rate, cirr.batch_size) == (50, 1e-5, 128)
    assert (fiq.num_epochs, fiq.learning_rate, fiq.batch_size) == (30, 2e-5, 128)
    assert (cirr.loss_rtc, cirr.loss_align, fiq.loss_rtc, fiq.loss_align) == (0.4, 0.4, 1.0, 1.0)
    assert cirr.schedule(50) == (80, 1 / 50)  # the quirk: laid over 80 epochs while training 50
    assert cirr.schedule(50, over_run=True) == (50, 1 / 50)
    assert fiq.schedule(30) == (30, pytest.approx(1.5 / 30))
    assert cirr.best_from_epoch == 19 and fiq.best_from_epoch == 0
    assert recipe_for("CIRR", "blip2-vitg") is cirr and recipe_for("CIRR", "tiny") is TOY["CIRR"]
    with pytest.raises(ValueError, match="dataset"):
        recipe_for("cirr", "tiny")


@pytest.mark.parametrize("dataset", ["CIRR", "FashionIQ"])
def test_optimizer_and_schedule_values(tiny_blip2, dataset):
    model = load_model(tiny_blip2)
    recipe = PAPER[dataset]
    optimizer = make_optimizer(model, recipe)
    (group,) = optimizer.param_groups
    assert group["betas"] == (0.9, 0.98) and group["eps"] == 1e-7 and group["weight_decay"] == 0.05
    assert len(group["params"]) == sum(1 for p in model.parameters() if p.requires_grad)
    steps = 10
    scheduler = make_scheduler(optimizer, recipe, steps)
    epochs = 80 if dataset == "CIRR" else 30
    assert scheduler.total_steps == epochs * steps
    assert group["lr"] == pytest.approx(recipe.learning_rate / recipe.div_factor)  # OneCycle starts at max/div
    lrs = []
    for _ in range(scheduler.total_steps - 1):
        optimizer.step()
        scheduler.step()
        lrs.append(group["lr"])
    peak = lrs.index(max(lrs)) + 1
    assert max(lrs) == pytest.approx(recipe.learning_rate, rel=1e-3)
    assert abs(peak - recipe.schedule(recipe.num_epochs)[1] * scheduler.total_steps) <= 1.5


def test_sampler_is_a_function_of_seed_and_epoch():
    sampler = EpochBatchSampler(103, batch_size=10, seed=3)
    sampler.set_epoch(2)
    first = list(sampler)
    assert len(first) == len(sampler) == 10 and all(len(b) == 10 for b in first)  # drop_last
    assert len({i for b in first for i in b}) == 100
    sampler.set_epoch(2, start_batch=4)
    assert list(sampler) == first[4:]
    sampler.set_epoch(3)
    assert list(sampler) != first
    shards = [EpochBatchSampler(103, batch_size=5, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in shards:
        s.set_epoch(2)
    merged = [a + b for a, b in zip(*map(list, shards), strict=True)]
    assert merged == first
    with pytest.raises(ValueError, match="cannot fill one batch"):
        EpochBatchSampler(5, batch_size=10, seed=0)


def small_config(toy_root, tiny_blip2, out, **changes) -> TrainConfig:
    base = dict(
        dataset="CIRR", data_path=str(toy_root), preset="tiny", model_path=str(tiny_blip2), output_dir=str(out),
        num_epochs=2, batch_size=128, validation_frequency=5, num_workers=0, seed=7,
    )
    return TrainConfig(**{**base, **changes})


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_the_same_weights(small_toy, tiny_blip2, tmp_path):
    whole = train(small_config(small_toy, tiny_blip2, tmp_path / "whole", batch_size=32, validation_frequency=1))

    def interrupt(kind, info):
        if kind == "step" and info["step"] == 9:  # mid-way through the second epoch (6 steps each)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(small_config(small_toy, tiny_blip2, tmp_path / "split", batch_size=32, validation_frequency=1),
              callback=interrupt)
    saved = torch.load(tmp_path / "split" / CHECKPOINT, weights_only=True)
    assert saved["position"] == {"epoch": 1, "step_in_epoch": 3, "global_step": 9}
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "running", "config"} <= set(saved)
    resumed = resume_training(tmp_path / "split")

    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "triplets_per_s")} for r in rows]  # noqa: E731
    assert strip(read_csv(tmp_path / "whole" / "train_metrics.csv")) == strip(
        read_csv(tmp_path / "split" / "train_metrics.csv")
    )
    assert read_csv(tmp_path / "whole" / "validation_metrics.csv") == read_csv(
        tmp_path / "split" / "validation_metrics.csv"
    )


@pytest.mark.slow
def test_stop_after_steps_then_resume_finishes(small_toy, tiny_blip2, tmp_path):
    base = shutil.copytree(tiny_blip2, tmp_path / "base")  # the run's base model, changed below
    config = small_config(small_toy, base, tmp_path / "run", num_epochs=1, batch_size=32)
    first = train(config, stop_after_steps=3)
    assert not first.finished and first.train_history == []

    # The checkpoint leaves out the frozen weights (the ViT among them); the base model has them.
    saved = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    frozen = {n for n, p in first.model.named_parameters() if not p.requires_grad}
    assert set(saved["frozen_from"]["names"]) == frozen and not frozen & set(saved["model"])
    assert any(n.startswith("vision_model.encoder.") for n in frozen)
    # Its size, and a saved model folder's, are what `plan` and the run's first lines tell before any is written.
    disk = run_disk(first.model.config)
    assert (tmp_path / "run" / CHECKPOINT).stat().st_size == pytest.approx(disk.checkpoint, rel=0.02)
    first.model.save_pretrained(tmp_path / "folder")
    assert (tmp_path / "folder" / "model.safetensors").stat().st_size == pytest.approx(disk.model_folder, rel=0.02)
    stopped = load_model(tmp_path / "run" / CHECKPOINT)  # evaluating a checkpoint rebuilds them too
    assert all(torch.equal(v, first.model.state_dict()[k]) for k, v in stopped.state_dict().items())
    weights = base / "model.safetensors"
    kept = weights.read_bytes()
    weights.write_bytes(kept[:-8] + bytes(8))  # other frozen weights at the same path
    with pytest.raises(CheckpointError, match=f"come from the run's base model {base}, whose files differ"):
        resume_training(tmp_path / "run")
    weights.write_bytes(kept)

    done = resume_training(tmp_path / "run")
    assert done.finished and [r["epoch"] for r in done.train_history] == [1]
    assert math.isfinite(done.train_history[0]["loss"])


def one_batch(dataset, size: int = 8) -> dict:
    return collate([dataset[i] for i in range(size)])


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 0.0), (torch.float16, 2e-2)])
def test_cache_gives_the_same_losses_and_gradients(toy_root, tiny_blip2, tmp_path, dtype, tol):
    model = load_model(tiny_blip2).eval()
    tokenizer = load_tokenizer(tiny_blip2)
    transform = build_transform("targetpad", model.config.vision_config.image_size)
    pixels = one_batch(CIRRDataset(toy_root, "train", "relative", preprocess=transform))
    cache = FeatureCache(tmp_path / "cache", model, transform, dtype=dtype)
    cached = one_batch(CachedImages(CIRRDataset(toy_root, "train", "relative"), cache))
    assert cached["reference_name"] == pixels["reference_name"]
    ids, mask = tokenize(tokenizer, pixels["caption"], model.config.max_txt_len)

    def losses_and_grads(batch):
        model.zero_grad()
        losses = model.losses(model({"reference": batch["reference"], "target": batch["target"],
                                     "input_ids": ids, "attention_mask": mask}))
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return {k: v.item() for k, v in losses.items()}, grads

    (l_px, g_px), (l_cache, g_cache) = losses_and_grads(pixels), losses_and_grads(cached)
    for name in LOSS_NAMES:
        assert l_cache[name] == pytest.approx(l_px[name], rel=tol, abs=tol * 1e-3)
    assert g_px.keys() == g_cache.keys()
    scale = max(g.abs().max().item() for g in g_px.values())  # some grads are ~0 in theory (key biases)
    for name in g_px:
        assert (g_px[name] - g_cache[name]).abs().max().item() <= tol * scale, name


def test_trainer_builds_the_reference_pieces(toy_root, tiny_blip2, tmp_path):
    settings = resolve(small_config(toy_root, tiny_blip2, tmp_path / "run", learning_rate=3e-4, loss_rtc=0.1))
    trainer = build_run(settings, tmp_path / "run")
    assert trainer.settings.learning_rate == 3e-4 and trainer.settings.loss_rtc == 0.1
    assert trainer.settings.loss_align == TOY["CIRR"].loss_align
    assert trainer.optimizer.param_groups[0]["max_lr"] == 3e-4
    assert trainer.scheduler.total_steps == 2 * len(trainer.sampler) == 2 * (2228 // 128)
    assert not trainer.scaler.is_enabled()  # CPU: fp32, no grad scaler
    assert not trainer.evaluation.exact  # validation in training scores in float32 (training.build says why)
    assert all(not p.requires_grad for p in trainer.model.vit_parameters())
    assert not (tmp_path / "run").exists()  # building writes nothing: a run that cannot start leaves no folder
    with open_run_dir(trainer, fresh=True):
        assert (tmp_path / "run" / "training_hyperparameters.json").is_file()
        assert (tmp_path / "run" / "tokenizer" / "tokenizer_config.json").is_file()


def test_missing_tiny_blip2_says_how_to_make_it(toy_root, tmp_path):
    data = tmp_path / "data"  # the toy CIRR without a pretrained tiny BLIP-2 beside it
    data.mkdir()
    (data / "cirr_dataset").symlink_to(toy_root / "cirr_dataset")
    with pytest.raises(FileNotFoundError, match="pretrain-tiny"):
        resolve(TrainConfig(dataset="CIRR", data_path=str(data), preset="tiny"))
