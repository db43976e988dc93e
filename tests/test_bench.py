"""The benchmark measures the trainer's own step: change a loss weight of the recipe and its loss changes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sprc_lib.course.bench import run_bench
from sprc_lib.training.recipes import TOY


def test_the_bench_step_is_the_trainers_with_the_recipes_weights():
    recipe = TOY["CIRR"]
    base = run_bench(preset="tiny", batch_size=4, repeats=1, device="cpu", recipe=recipe)
    heavier = run_bench(preset="tiny", batch_size=4, repeats=1, device="cpu",
                        recipe=replace(recipe, loss_rtc=recipe.loss_rtc + 1.0))
    # Same seed, so the first step sees the same model and batch: only the weight differs, by 1 x loss_rtc
    # (about ln 4 for a fresh model on 4 triplets).
    assert len(base.losses) == len(heavier.losses) == 4  # warm-up and one timed call of each training path
    assert heavier.losses[0] - base.losses[0] == pytest.approx(1.386, abs=0.4)
    assert "train step, cached ViT tokens" in base.rows[2][0]
    assert any("re-rank" in row[0] for row in base.rows)


def test_training_only_times_the_same_steps_and_no_second_model():
    full = run_bench(preset="tiny", batch_size=4, repeats=1, device="cpu")
    steps = run_bench(preset="tiny", batch_size=4, repeats=1, device="cpu", training_only=True)
    assert [row[0] for row in steps.rows[1:]] == [row[0] for row in full.rows[1:3]]
    assert steps.losses == full.losses  # the same steps on the same model and batch
    assert "ViT forward on both images" in steps.rows[0][0]


@pytest.mark.slow
def test_the_memory_rows_put_the_whole_batch_beside_micro_batches():
    from sprc_lib.course.bench import memory_bench

    rows = memory_bench("tiny", batch_size=16, micro_batch=4, device="cpu")
    assert [r[0] for r in rows] == ["train step, batch 16, whole batch", "train step, batch 16, micro-batches of 4",
                                    "whole / micro-batched peak"]
    measured, planned = float(rows[2][1]), float(rows[2][2])
    assert measured > 1 and planned > 1  # micro-batches need less: measured (CPU) and planned (GPU) alike
