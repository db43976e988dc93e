"""The one declaration of the training settings: the flags come from it, and `--resume` treats every
setting as declared (a fixed one changed stops with its name; an applied one is used and recorded)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from sprc_lib.cli import build_parser, main
from sprc_lib.data.toy import MARKER
from sprc_lib.paths import checkout
from sprc_lib.training import config as config_module
from sprc_lib.training.config import APPLIED, FIXED, SettingError, TrainConfig, resolve, resolve_resume
from sprc_lib.training.recipes import TOY
from sprc_lib.training.runs import CHECKPOINT, HYPERPARAMETERS
from sprc_lib.training.trainer import resume_training, train

# A valid value other than the saved run's, for every setting (a new setting must be added here).
OTHER = {
    "dataset": "FashionIQ", "data_path": None, "preset": "blip2-vitg", "model_path": "another/model",
    "tokenizer": "another/tokenizer", "output_dir": "another-run", "num_epochs": 3, "learning_rate": 1e-4,
    "batch_size": 16, "loss_rtc": 0.5, "loss_align": 0.5, "validation_frequency": 3, "transform": "squarepad",
    "target_ratio": 1.5, "schedule_over_run": True, "seed": 1, "precision": "fp32", "global_negatives": True,
    "num_workers": 1, "device": "cpu", "skip_missing": True, "micro_batch": 8, "gradient_checkpointing": True,
    "report_to": "tensorboard",
    "feature_cache": None, "save_training": True,
    "save_best": True,
    "checkpoint_every": 7, "auxiliary_prompt": "per-sample",
    "reranker": True, "stage1_model": "another/sprc", "rerank_top_k": 5, "rerank_fuse": 0.25,
}  # fmt: skip
NAMES = [f.name for f in fields(TrainConfig)]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_every_setting_has_one_flag_a_kind_and_a_test_value():
    assert set(OTHER) == set(NAMES)
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    options = {o for command in ("train", "train-reranker") for action in commands[command]._actions
               for o in action.option_strings}
    for name in NAMES:
        assert name == "reranker" or flag(name) in options, name  # `reranker` is which command runs
        assert config_module.resume_rule(name) in (FIXED, APPLIED), name
    args = parser.parse_args(["train", "--dataset", "cirr", "--no-save-training", "--num-epochs", "3"])
    assert config_module.given_settings(args) == {"dataset": "CIRR", "save_training": False, "num_epochs": 3}


@pytest.fixture
def toy_track(toy_root: Path, tiny_blip2: Path, tmp_path: Path) -> Path:
    """A toy data folder as `make models` leaves it: the datasets, the tiny BLIP-2 and a tiny CIRR model."""
    root = tmp_path / "toy"
    (root / "runs" / "CIRR").mkdir(parents=True)
    for name in ("cirr_dataset", "fashionIQ_dataset", MARKER):
        (root / name).symlink_to(toy_root / name)
    (root / "tiny-blip2").symlink_to(tiny_blip2)
    (root / "runs" / "CIRR" / "best").symlink_to(tiny_blip2)
    return root


def test_resolve_decides_every_default_once_and_gives_resolved_settings_back_unchanged(toy_track):
    toy_root = toy_track
    settings = resolve(TrainConfig(dataset="FashionIQ", data_path=str(toy_root)))
    assert settings.preset == "tiny"  # toy data: the tiny preset
    assert settings.model_path == str(toy_root / "tiny-blip2")  # the tiny track's pretrained BLIP-2
    recipe = TOY["FashionIQ"]
    assert (settings.num_epochs, settings.learning_rate) == (recipe.num_epochs, recipe.learning_rate)
    assert (settings.rerank_top_k, settings.rerank_fuse) == (40, 0.5)
    assert all(getattr(settings, name) is not None for name in config_module.RECIPE_FIELDS)
    assert resolve(settings) == settings
    reranker = resolve(TrainConfig(dataset="CIRR", data_path=str(toy_root), reranker=True))
    assert reranker.stage1_model == str(toy_root / "runs" / "CIRR" / "best") and reranker.rerank_top_k == 20


def test_resolve_resume_keeps_the_run_and_takes_what_is_given(toy_track):
    toy_root = toy_track
    saved = TrainConfig(dataset="FashionIQ", data_path=str(toy_root), num_epochs=4, device="cuda")
    config, changes = resolve_resume({}, vars(saved), run_dir="/runs/copy")
    assert config.data_path == str(toy_root) and config.num_epochs == 4 and config.output_dir == "/runs/copy"
    assert changes == []
    config, changes = resolve_resume({"device": "cpu", "dataset": "FashionIQ", "num_epochs": 4}, vars(saved), "/r")
    assert config.device == "cpu" and [(c.setting, c.old, c.new) for c in changes] == [("device", "cuda", "cpu")]
    unresolved = vars(TrainConfig(dataset="FashionIQ", data_path=str(toy_root), preset="tiny"))  # saved unresolved
    recipe_default = TOY["FashionIQ"].learning_rate
    assert resolve_resume({"learning_rate": recipe_default}, unresolved, "/r")[1] == []
    with pytest.raises(SettingError, match=r"`seed` 3 \(the run has 0\).*`precision` 'fp16'.*new run"):
        resolve_resume({"seed": 3, "precision": "fp16"}, unresolved, "/r")
    with pytest.raises(SettingError, match="unknown"):
        resolve_resume({"colour": "red"}, unresolved, "/r")
    with pytest.raises(SettingError, match="`save_best` needs `save_training`"):
        resolve(TrainConfig(dataset="CIRR", data_path=str(toy_root), save_best=True))
    with pytest.raises(SettingError, match="`dataset` is required"):
        resolve(TrainConfig(data_path=str(toy_root)))


@pytest.fixture(scope="module")
def saved_run(toy_root: Path, tiny_blip2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy CIRR run stopped after one step, with every setting at its default but the paths."""
    run = tmp_path_factory.mktemp("runs") / "run"
    train(TrainConfig(dataset="CIRR", data_path=str(toy_root), model_path=str(tiny_blip2), output_dir=str(run),
                      num_epochs=1, batch_size=32, num_workers=0), stop_after_steps=1)
    return run


@pytest.mark.parametrize("name", [n for n in NAMES if config_module.resume_rule(n) == FIXED])
def test_a_fixed_setting_changed_on_resume_stops_and_names_it(saved_run, name, capsys):
    before = (saved_run / CHECKPOINT).stat().st_mtime_ns
    value = OTHER[name]
    argv = [flag(name)] if isinstance(value, bool) else [flag(name), str(value)]
    if name == "reranker":  # chosen by the command: an SPRC run resumed as a re-ranker run
        assert main(["train-reranker", "--resume", str(saved_run)]) == 2
        assert f"resume it with `python -m sprc_lib train --resume {saved_run}`" in capsys.readouterr().err
        return
    assert main(["train", "--resume", str(saved_run), *argv]) == 2
    message = capsys.readouterr().err
    assert flag(name) in message and "start a new run" in message, message
    assert (saved_run / CHECKPOINT).stat().st_mtime_ns == before  # nothing ran


@pytest.mark.parametrize("name", [n for n in NAMES if config_module.resume_rule(n) == APPLIED])
def test_an_applied_setting_is_used_from_the_resume_on_and_recorded(saved_run, toy_root, name, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(saved_run, run)  # resumed into the folder given, not the one it was copied from
    value = {"data_path": str(tmp_path / "same-data"), "feature_cache": str(tmp_path / "cache")}.get(name, OTHER[name])
    if name == "data_path":
        (tmp_path / "same-data").symlink_to(toy_root)
    given = {name: value, **({"save_training": True} if name == "save_best" else {})}
    result = resume_training(run, stop_after_steps=1, **given)
    assert result.run_dir == run and not result.finished
    saved = torch.load(run / CHECKPOINT, weights_only=True)
    assert saved["config"][name] == value and saved["position"]["global_step"] == 2
    changes = json.loads((run / HYPERPARAMETERS).read_text())["changes_on_resume"]
    old = torch.load(saved_run / CHECKPOINT, weights_only=True)["config"][name]  # saved resolved
    assert {"setting": name, "from": old, "to": value, "epoch": 1, "global_step": 1} in changes
    assert json.loads((saved_run / HYPERPARAMETERS).read_text()).get("changes_on_resume") is None


def test_resume_with_another_precision_from_the_shell_names_it(saved_run):
    done = subprocess.run([sys.executable, "-m", "sprc_lib", "train", "--resume", str(saved_run), "--precision",
                           "fp32"], cwd=checkout(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "--precision 'fp32' (the run has 'auto')" in done.stderr and "start a new run" in done.stderr
    assert "Traceback" not in done.stderr
