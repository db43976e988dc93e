"""`python -m sprc_lib <command>`: one entry point for every job the course runs from a shell."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sprc_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _REGISTRY:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


# Each entry adds one sub-command; the module that does the work is imported only when it runs.
_REGISTRY: list[Callable[[argparse._SubParsersAction], None]] = []


def _register_toy_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("toy-data", help="generate the toy CIRR and FashionIQ datasets (real layouts)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: data/toy, $SPRC_DATA/toy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=("small", "medium"), default="small")
    p.set_defaults(run=_run_toy_data)


def _run_toy_data(args: argparse.Namespace) -> int:
    from sprc_lib.data.check import data_tour
    from sprc_lib.data.toy import generate_toy_data
    from sprc_lib.paths import toy_root

    out = args.out or toy_root()
    summary = generate_toy_data(out, seed=args.seed, size=args.size)
    print(f"Wrote the {args.size} toy datasets (seed {args.seed}) to {out} in {summary['seconds']:.1f} s.\n")
    return data_tour(out)


def _register_check_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-data", help="validate a dataset folder: layout, schemas, counts, images")
    p.add_argument("--dataset", choices=("CIRR", "FashionIQ"), required=True)
    p.add_argument("--data-path", type=Path, default=None, help="the folder that contains cirr_dataset/ or "
                   "fashionIQ_dataset/ (default: data/ or $SPRC_DATA)")
    p.add_argument("--verify-images", action="store_true", help="decode every image (slow on real data)")
    p.add_argument("--skip-missing", action="store_true",
                   help="accept missing images, as training with skip_missing=True does")
    p.set_defaults(run=_run_check_data)


def _run_check_data(args: argparse.Namespace) -> int:
    from sprc_lib.data.check import run_check
    from sprc_lib.paths import data_root

    return run_check(args.dataset, args.data_path or data_root(), args.verify_images, args.skip_missing)


def _register_course(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("course", help="the toy track end to end: data, pretraining, training, evaluation, summary")
    p.add_argument("--data-path", type=Path, default=None, help="toy data root (default: data/toy)")
    p.add_argument("--retrain", action="store_true", help="train the tiny models again even if they exist")
    p.add_argument("--models-only", action="store_true", help="only make sure the tiny models exist (make models)")
    p.set_defaults(run=_run_course)


def _run_course(args: argparse.Namespace) -> int:
    from sprc_lib.course import run_course
    from sprc_lib.data.check import data_tour
    from sprc_lib.paths import toy_root

    root = args.data_path or toy_root()
    if args.models_only:
        from sprc_lib.course import DATASETS, tiny_model

        for dataset in DATASETS:
            tiny_model(dataset, root, retrain=args.retrain)
        return 0
    data_tour(root)
    return run_course(root, retrain=args.retrain)


_REGISTRY += [_register_toy_data, _register_check_data, _register_course]


# ---------------------------------------------------------------- model commands (the seed README's flags)

SEED_MODEL_NAME = "blip2_cir_align_prompt"


def _dataset_name(value: str) -> str:
    """The seed accepts 'CIRR' / 'FashionIQ' in any case ('fashionIQ' appears in its README)."""
    for name in ("CIRR", "FashionIQ"):
        if value.lower() == name.lower():
            return name
    raise argparse.ArgumentTypeError(f"--dataset must be CIRR or FashionIQ, got {value!r}")


def _add_model_flags(p: argparse.ArgumentParser, model_help: str) -> None:
    p.add_argument("--data-path", type=Path, default=None, help="folder with cirr_dataset/ and fashionIQ_dataset/ "
                   "(default: data/toy for the tiny preset, else data/ or $SPRC_DATA)")
    p.add_argument("--blip-model-name", default=SEED_MODEL_NAME, help="kept for the seed's commands; only "
                   f"{SEED_MODEL_NAME} (SPRC) exists here")
    p.add_argument("--preset", choices=("tiny", "blip2-vitg"), default=None,
                   help="model sizes (default: blip2-vitg, or tiny on toy data)")
    p.add_argument("--model-path", default=None, help=model_help)
    p.add_argument("--tokenizer", default=None, help="tokenizer folder or hub id (default: beside the model)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--transform", choices=("targetpad", "squarepad"), default=None)
    p.add_argument("--target-ratio", type=float, default=None, help="TargetPad ratio (targetpad only; 1.25)")
    p.add_argument("--feature-cache", default=None, help="folder for the frozen-ViT feature cache")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def _check_common(args: argparse.Namespace) -> None:
    from sprc_lib.paths import data_root, toy_root

    if args.blip_model_name != SEED_MODEL_NAME:
        raise SystemExit(f"--blip-model-name {args.blip_model_name}: this library implements only "
                         f"{SEED_MODEL_NAME} (SPRC); drop the flag or pass that name")
    if args.transform == "squarepad" and args.target_ratio is not None:
        raise SystemExit("--target-ratio only applies to --transform targetpad")
    if args.data_path is None:
        args.data_path = toy_root() if args.preset == "tiny" else data_root()
    if args.preset is None:
        args.preset = "tiny" if (Path(args.data_path) / ".toy-data.json").is_file() else "blip2-vitg"


def _register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train SPRC with the reference recipe (resumable)")
    p.add_argument("--dataset", type=_dataset_name, default=None, help="CIRR or FashionIQ")
    _add_model_flags(p, "initial weights: BLIP-2 dir/hub id, a saved SPRC model, a released .pt "
                        "(default: Salesforce/blip2-itm-vit-g, or <data-path>/tiny-blip2 for tiny)")
    p.add_argument("--num-epochs", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--loss-rtc", type=float, default=None, help="RTC loss weight (CIRR 0.4, FashionIQ 1)")
    p.add_argument("--loss-align", type=float, default=None, help="alignment loss weight (CIRR 0.4, FashionIQ 1)")
    p.add_argument("--validation-frequency", type=int, default=None, help="validate every N epochs (1)")
    p.add_argument("--save-training", action="store_true", help="write model folders (final/, best/)")
    p.add_argument("--save-best", action="store_true", help="keep the best model by the reference's criterion")
    p.add_argument("--schedule-over-run", action="store_true",
                   help="lay CIRR's OneCycle schedule over the epochs run instead of the reference's 80")
    p.add_argument("--output-dir", default=None, help="run folder (default: runs/<dataset>_<preset>_<time>)")
    p.add_argument("--resume", default=None, help="continue a stopped run (its folder or checkpoint.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps")
    p.add_argument("--stop-after-steps", type=int, default=None, help="stop (with a checkpoint) after N steps")
    p.add_argument("--global-negatives", action="store_true", default=None,
                   help="under torchrun: contrast each query with the targets of all processes, not only its own")
    p.set_defaults(run=_run_train)


# Flags a resumed run takes from its saved hyperparameters; passing them with --resume is a mistake.
_FIXED_ON_RESUME = ("dataset", "preset", "model_path", "tokenizer", "num_epochs", "learning_rate", "batch_size",
                    "loss_rtc", "loss_align", "validation_frequency", "transform", "target_ratio", "output_dir",
                    "global_negatives")


def _run_train(args: argparse.Namespace) -> int:
    from sprc_lib.train import TrainConfig, train

    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in _FIXED_ON_RESUME if getattr(args, k) is not None]
        if given:
            raise SystemExit(f"{', '.join(given)}: a resumed run keeps its saved hyperparameters; "
                             "pass only --resume (and --data-path, --num-workers, --device, --feature-cache)")
    elif args.dataset is None:
        raise SystemExit("--dataset is required (CIRR or FashionIQ)")
    if args.save_best and not args.save_training:
        raise SystemExit("--save-best needs --save-training (as in the seed's commands): nothing is saved otherwise")
    _check_common(args)
    config = TrainConfig(
        dataset=args.dataset or "CIRR", data_path=str(args.data_path), preset=args.preset,
        model_path=args.model_path, tokenizer=args.tokenizer, output_dir=args.output_dir,
        num_epochs=args.num_epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        loss_rtc=args.loss_rtc, loss_align=args.loss_align, validation_frequency=args.validation_frequency,
        transform=args.transform, target_ratio=args.target_ratio, schedule_over_run=args.schedule_over_run,
        num_workers=args.num_workers, save_training=args.save_training, save_best=args.save_best, seed=args.seed,
        precision=args.precision, device=args.device, feature_cache=args.feature_cache,
        checkpoint_every=args.checkpoint_every, stop_after_steps=args.stop_after_steps,
        global_negatives=bool(args.global_negatives),
    )
    result = train(config, resume=args.resume)
    print(f"run folder: {result.run_dir}")
    if result.best:
        print(f"best epoch {result.best['epoch']}: {result.best['key']} = {result.best['score']:.2f}")
    return 0


def _load_for_eval(args: argparse.Namespace):
    from sprc_lib.model import preset_config
    from sprc_lib.model.loading import BLIP2_RETRIEVAL, load_model
    from sprc_lib.model.tokenizer import load_tokenizer

    if args.model_path is None:
        raise SystemExit("--model-path is required: a saved model folder, a run's checkpoint.pt, or sprc_cirr.pt")
    model_dir = Path(args.model_path) if Path(args.model_path).is_dir() else Path(args.model_path).parent
    beside = [d for d in (model_dir, model_dir / "tokenizer") if (d / "tokenizer_config.json").is_file()]
    source = args.tokenizer or (beside[0] if beside else None)
    if source is None and args.preset == "tiny":
        raise SystemExit(f"no tokenizer beside {args.model_path}: pass --tokenizer (the tiny model's folder)")
    tokenizer = load_tokenizer(source or BLIP2_RETRIEVAL)
    model = load_model(args.model_path, preset_config(args.preset, len(tokenizer)))
    return model, tokenizer


def _eval_setup(args: argparse.Namespace):
    import torch

    from sprc_lib.data import build_transform
    from sprc_lib.env import autocast_dtype, pick_device
    from sprc_lib.features import FeatureCache

    model, tokenizer = _load_for_eval(args)
    device = pick_device(args.device)
    model.to(device)
    if device.type == "cuda":
        model.set_vit_dtype(torch.float16)
    size = model.config.vision_config.image_size
    preprocess = build_transform(args.transform or "targetpad", size, args.target_ratio or 1.25)
    cache = FeatureCache(args.feature_cache, model, preprocess) if args.feature_cache else None
    return model, tokenizer, preprocess, device, autocast_dtype(args.precision, device), cache


def _register_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="evaluate a model on CIRR or FashionIQ val, beside chance level")
    p.add_argument("--dataset", type=_dataset_name, required=True)
    _add_model_flags(p, "a saved model folder, a run's checkpoint.pt, or a released sprc_*.pt")
    p.add_argument("--output", type=Path, default=None, help="also write the metrics as JSON here")
    p.set_defaults(run=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    import json

    from sprc_lib.evaluate import chance, validate
    from sprc_lib.tables import metrics_table

    _check_common(args)
    model, tokenizer, preprocess, device, dtype, cache = _eval_setup(args)
    metrics = validate(args.dataset, model, tokenizer, args.data_path, preprocess, device, dtype, cache,
                       batch_size=args.batch_size or 32, num_workers=args.num_workers)
    print(f"{args.dataset} val, {args.model_path}")
    print(metrics_table(metrics, chance(args.dataset, args.data_path)))
    if args.output:
        args.output.write_text(json.dumps(metrics, indent=2))
    return 0


def _register_cirr_submission(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cirr-submission", help="write the CIRR test1 files for the evaluation server")
    _add_model_flags(p, "a saved model folder, a run's checkpoint.pt, or a released sprc_cirr.pt")
    p.add_argument("--submission-name", default=None, help="files are recall_submission_<name>.json ...")
    p.add_argument("--output-dir", type=Path, default=Path("submission"))
    p.set_defaults(run=_run_cirr_submission)


def _run_cirr_submission(args: argparse.Namespace) -> int:
    from sprc_lib.evaluate import cirr_test_submission

    _check_common(args)
    model, tokenizer, preprocess, device, dtype, cache = _eval_setup(args)
    path = Path(args.model_path)
    name = args.submission_name or (f"{path.resolve().parent.name}_{path.name}" if path.is_dir() else path.stem)
    paths = cirr_test_submission(model, tokenizer, args.data_path, preprocess, args.output_dir, name, device, dtype,
                                 cache, batch_size=args.batch_size or 32, num_workers=args.num_workers)
    print("wrote (validated):\n" + "\n".join(f"  {p}" for p in paths))
    print("upload both to the CIRR evaluation server (see Test-split_server.md in the CIRR repository)")
    return 0


def _register_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a released LAVIS checkpoint (sprc_*.pt) to this project's format")
    p.add_argument("--lavis-checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder (safetensors + config.json + tokenizer)")
    p.add_argument("--preset", choices=("tiny", "blip2-vitg"), default="blip2-vitg")
    p.add_argument("--tokenizer", default=None, help="tokenizer to save beside it (default: BLIP-2's)")
    p.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from sprc_lib.model import preset_config
    from sprc_lib.model.lavis import load_lavis_checkpoint
    from sprc_lib.model.loading import BLIP2_RETRIEVAL
    from sprc_lib.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer or BLIP2_RETRIEVAL)
    model = load_lavis_checkpoint(args.lavis_checkpoint, preset_config(args.preset, len(tokenizer)))
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    count = sum(p.numel() for p in model.parameters())
    print(f"converted {args.lavis_checkpoint} -> {args.out} ({count:,} parameters)")
    return 0


def _register_pretrain_tiny(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain-tiny", help="pretrain the tiny BLIP-2 on the toy image-text pairs (stage 1)")
    p.add_argument("--data-path", type=Path, default=None, help="toy data root (default: data/toy)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <data-path>/tiny-blip2)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(run=_run_pretrain_tiny)


def _run_pretrain_tiny(args: argparse.Namespace) -> int:
    from sprc_lib.paths import toy_root
    from sprc_lib.pretrain import TINY_BLIP2, pretrain_tiny_blip2

    root = args.data_path or toy_root()
    out = pretrain_tiny_blip2(root, args.out or root / TINY_BLIP2, args.steps, args.batch_size, args.learning_rate,
                              args.seed, args.device)
    print(f"tiny BLIP-2 saved to {out}")
    return 0


_REGISTRY += [_register_train, _register_validate, _register_cirr_submission, _register_convert,
              _register_pretrain_tiny]


def _register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="training/indexing throughput with and without the feature cache, side by side")
    p.add_argument("--preset", choices=("tiny", "proportional", "blip2-vitg"), default="tiny",
                   help="proportional: CPU-sized, with the paper's ViT-to-Q-Former cost ratio")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from sprc_lib.bench import print_bench

    print_bench(preset=args.preset, batch_size=args.batch_size, repeats=args.repeats, device=args.device,
                precision=args.precision)
    return 0


_REGISTRY += [_register_bench]
