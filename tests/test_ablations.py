"""The homework's ablations: an arm with fewer prompt tokens is a working SPRC model, and TEACHING.md shows the
ranges `make ablations` measured (ablations.json), not numbers typed by hand."""

from __future__ import annotations

import json

import torch

from sprc_lib.course import ablations
from sprc_lib.course.reference import doc_block
from sprc_lib.course.toy_track import ensure_toy
from sprc_lib.model.loading import load_model


def test_fewer_prompt_tokens_keeps_the_first_query_tokens_and_survives_a_save(tmp_path):
    root = ensure_toy()
    whole = load_model(ablations.start_folder(root, tmp_path / "whole", seed=3, keep=None))
    four = load_model(ablations.start_folder(root, tmp_path / "four", seed=3, keep=4))
    assert four.config.num_query_tokens == 4 and whole.config.num_query_tokens > 4
    assert torch.equal(four.query_tokens, whole.query_tokens[:, :4])
    assert torch.equal(four.prompt_tokens, whole.prompt_tokens[:, :4])  # the same seed draws the same prompt
    size = four.config.vision_config.image_size
    images, ids = torch.rand(2, 3, size, size), torch.randint(5, 50, (2, 6))
    losses = four.losses(four({"reference": images, "target": images, "input_ids": ids,
                               "attention_mask": torch.ones_like(ids)}))
    assert set(losses) == {"loss_itc", "loss_rtc", "loss_align"} and all(v.isfinite() for v in losses.values())


def test_teaching_shows_the_measured_ablations():
    results = json.loads(ablations.RESULTS.read_text())
    assert list(results) == list(ablations.ARMS)
    assert all(set(by_seed) == set(results[ablations.RECIPE]) for by_seed in results.values())
    assert len(results[ablations.RECIPE]) >= 3, "ablations.json: measure at least three seeds"
    block = doc_block(ablations.TEACHING, ablations.MARK)
    assert block.strip() == ablations.block(results).strip(), "TEACHING.md: the ablations block is stale"
