"""The paper's per-sample auxiliary prompts (`--auxiliary-prompt per-sample`, SPRC issue #17): at the start they are
the authors' shared prompt, each triplet's RTC pass trains only its own, they are saved with a run's checkpoint (so
a stopped run resumes) and never with a model folder."""

from __future__ import annotations

import pytest
import torch

from sprc_lib.data.base import collate
from sprc_lib.data.cirr import CIRRDataset
from sprc_lib.data.transforms import build_transform
from sprc_lib.model.loading import load_model
from sprc_lib.model.sprc import AUXILIARY
from sprc_lib.model.tokenizer import load_tokenizer, tokenize
from sprc_lib.training.config import SettingError, TrainConfig, resolve
from sprc_lib.training.disk import run_disk
from sprc_lib.training.runs import CHECKPOINT
from sprc_lib.training.trainer import resume_training, train


def test_per_sample_prompts_start_as_the_shared_one_and_each_triplet_trains_its_own(toy_root, tiny_blip2):
    model = load_model(tiny_blip2).eval()
    tokenizer = load_tokenizer(tiny_blip2)
    dataset = CIRRDataset(toy_root, "train", "relative",
                          preprocess=build_transform("targetpad", model.config.vision_config.image_size))
    batch = collate([dataset[i] for i in (5, 0, 11, 3)])
    assert batch["index"].tolist() == [5, 0, 11, 3]
    ids, mask = tokenize(tokenizer, batch["caption"], model.config.max_txt_len)
    inputs = {"reference": batch["reference"], "target": batch["target"], "input_ids": ids, "attention_mask": mask}
    shared = model.losses(model(inputs))
    model.add_auxiliary_prompts(len(dataset))
    per_sample = model.losses(model({**inputs, "sample": batch["index"]}))
    for name, value in shared.items():
        torch.testing.assert_close(per_sample[name], value)

    sum(per_sample.values()).backward()
    touched = model.auxiliary_prompts.grad.abs().sum((1, 2)).nonzero().flatten().tolist()
    assert touched == [0, 3, 5, 11]  # the batch's triplets, by their index in the training set
    assert model.prompt_tokens.grad is None  # the shared prompt is not what the RTC pass read


def test_per_sample_prompts_refuse_the_reranker_and_the_gradient_cache(toy_root):
    base = dict(dataset="CIRR", data_path=str(toy_root), auxiliary_prompt="per-sample")
    for other, flag in (({"reranker": True}, "re-ranker"), ({"micro_batch": 8}, "`micro_batch`")):
        with pytest.raises(SettingError, match=flag):
            resolve(TrainConfig(**base, **other))


@pytest.mark.slow
def test_a_per_sample_run_resumes_from_its_checkpoint_and_saves_no_prompts_with_its_model(
        small_toy, tiny_blip2, tmp_path):
    config = TrainConfig(dataset="CIRR", data_path=str(small_toy), preset="tiny", model_path=str(tiny_blip2),
                         output_dir=str(tmp_path / "run"), num_epochs=1, batch_size=32, validation_frequency=5,
                         num_workers=0, seed=7, save_training=True, auxiliary_prompt="per-sample")
    first = train(config, stop_after_steps=2)
    saved = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    triplets = len(CIRRDataset(small_toy, "train", "relative"))
    assert saved["model"][AUXILIARY].shape == (triplets, *first.model.prompt_tokens.shape[1:])
    torch.testing.assert_close(saved["model"][AUXILIARY], first.model.auxiliary_prompts.detach(), rtol=0, atol=0)
    # what the run's first lines said it would write: the prompts and their moments in the checkpoint only
    disk, shared = run_disk(first.model.config, per_sample=triplets), run_disk(first.model.config)
    assert (tmp_path / "run" / CHECKPOINT).stat().st_size == pytest.approx(disk.checkpoint, rel=0.02)
    assert disk.checkpoint > 3 * saved["model"][AUXILIARY].numel() * 4 and disk.model_folder == shared.model_folder
    evaluated = load_model(tmp_path / "run" / CHECKPOINT)  # validate reads a checkpoint without them
    assert evaluated.auxiliary_prompts is None

    done = resume_training(tmp_path / "run")
    assert done.finished and done.model.auxiliary_prompts.shape[0] == triplets
    final = load_model(tmp_path / "run" / "final")
    assert final.auxiliary_prompts is None
    assert all(torch.equal(v, done.model.state_dict()[k]) for k, v in final.state_dict().items())
