"""The command line: the seed README's flags are accepted, wrong combinations get a helpful message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sprc_lib.cli import main


def fails(argv, capsys) -> str:
    """The message of a command that must fail with exit code 2 (a user's mistake, or argparse's usage error)."""
    try:
        code = main(argv)
    except SystemExit as err:  # argparse: usage errors
        code = err.code
    assert code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "CIRR", "--save-best"], "--save-best needs --save-training"),
        (["train", "--dataset", "CIRR", "--blip-model-name", "blip2_cir_cat"], "implements only blip2_cir_align"),
        (["train", "--dataset", "CIRR", "--transform", "squarepad", "--target-ratio", "1.3"], "only applies to"),
        (["train"], "--dataset is required"),
        (["train", "--dataset", "COCO"], "--dataset must be CIRR or FashionIQ"),
        (["validate", "--dataset", "CIRR", "--preset", "tiny"], "--model-path is required"),
    ],
)
def test_wrong_flags_say_what_to_do(argv, message, capsys, tmp_path):
    assert message in fails(argv + ["--data-path", str(tmp_path)] if argv != ["train"] else argv, capsys)


def test_seed_readme_training_command_parses():
    from sprc_lib.cli import build_parser

    seed_command = (
        "train --dataset fashionIQ --data-path /data --blip-model-name blip2_cir_align_prompt --num-epochs 30 "
        "--num-workers 4 --learning-rate 2e-5 --batch-size 128 --transform targetpad --target-ratio 1.25 "
        "--save-training --save-best --validation-frequency 1"
    )
    args = build_parser().parse_args(seed_command.split(" "))
    assert (args.dataset, args.num_epochs, args.learning_rate, args.batch_size) == ("FashionIQ", 30, 2e-5, 128)
    assert args.save_training and args.save_best and args.target_ratio == 1.25


def test_bench_prints_ratios(capsys):
    assert main(["bench", "--preset", "tiny", "--batch-size", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "train step, cached ViT tokens" in out and "speed-up" in out and "ViT forward on both images" in out


def test_validate_a_saved_tiny_model(tiny_blip2, toy_root, tmp_path, capsys):
    from sprc_lib.model.loading import load_model
    from sprc_lib.model.tokenizer import load_tokenizer

    load_model(tiny_blip2).save_pretrained(tmp_path / "model")
    load_tokenizer(tiny_blip2).save_pretrained(tmp_path / "model")
    code = main(["validate", "--dataset", "FashionIQ", "--data-path", str(toy_root), "--preset", "tiny",
                 "--model-path", str(tmp_path / "model"), "--num-workers", "0", "--output", str(tmp_path / "m.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "average_recall_at10" in out and "chance" in out
    assert (tmp_path / "m.json").is_file()


def test_convert_a_lavis_file_then_validate_it(tiny_blip2, toy_root, tmp_path, capsys):
    """The reproduce path on the tiny model: a released-format file -> convert -> the same model."""
    import torch

    from sprc_lib.model.lavis import save_lavis_checkpoint
    from sprc_lib.model.loading import load_model

    model = load_model(tiny_blip2).eval()
    save_lavis_checkpoint(model, tmp_path / "sprc_tiny.pt")
    assert main(["convert", "--lavis-checkpoint", str(tmp_path / "sprc_tiny.pt"), "--out", str(tmp_path / "conv"),
                 "--preset", "tiny", "--tokenizer", str(tiny_blip2)]) == 0
    converted = load_model(tmp_path / "conv").eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model.image_features(model.encode_image(pixels))
        b = converted.image_features(converted.encode_image(pixels))
    assert torch.allclose(a, b, atol=1e-2)  # the released format keeps the ViT's linear layers in fp16
    assert "converted" in capsys.readouterr().out


def test_building_the_parser_imports_no_torch():
    """Sub-commands import their work lazily, so `--help` stays fast: the flags read only the declarations
    (`sprc_lib.training.config`, and the dataset names in `sprc_lib.data.schema`)."""
    code = "import sys; from sprc_lib.cli import build_parser; build_parser(); " \
           "print(sorted(m for m in sys.modules if m.startswith(('sprc_lib.data', 'torch', 'transformers'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['sprc_lib.data', 'sprc_lib.data.schema']"
