"""`ht2 finetune`: fine-tune a compressed model folder back to accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ht2 import models
from ht2.cli.calibrate import calibrate_on_train_images
from ht2.cli.number_args import fraction, positive_float, positive_int
from ht2.cli.training_args import add_training_args, config_from_args
from ht2.errors import HT2Error

if TYPE_CHECKING:
    from torch import nn

EXAMPLES = """examples:
  ht2 finetune out/r20-e0.7 --data ~/data/cifar10 --epochs 5 --out out/r20-e0.7-ft
  ht2 finetune out/r20-e0.7 --data ~/data/cifar10 --epochs 5 --distill --out out/r20-e0.7-kd
  torchrun --standalone --nproc_per_node=2 -m ht2 finetune out/r18 --data ~/imagenet \\
      --recipe finetune-imagenet --out out/r18-ft
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a compressed model folder",
        description="Fine-tune a folder written by `ht2 compress` and write a compressed model "
        "folder again (same format, report.json gains the accuracy). BatchNorm statistics are "
        "re-estimated first (see `ht2 calibrate`), and the model is evaluated before training.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="DIR", help="compressed model folder (ht2 compress)")
    add_training_args(parser, default_recipe="finetune-cifar10")
    parser.add_argument(
        "--distill",
        action="store_true",
        help="add knowledge distillation from the uncompressed model named in "
        "DIR/ht2.json (default: off)",
    )
    parser.add_argument(
        "--teacher-weights",
        metavar="FILE",
        help="weights of the uncompressed model (default: those in ht2.json)",
    )
    parser.add_argument(
        "--temperature",
        dest="distill_temperature",
        type=positive_float,
        help="distillation temperature (default: 4.0)",
    )
    parser.add_argument(
        "--distill-weight",
        type=fraction,
        help="share of the distillation term in the loss, in [0, 1] (default: 0.5)",
    )
    parser.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="skip the BatchNorm re-estimation before training (default: calibrate)",
    )
    parser.add_argument(
        "--calib-images",
        type=positive_int,
        default=2048,
        help="training images for the calibration (default: 2048)",
    )
    parser.set_defaults(run=run)


def teacher_for(source: Path, weights: str | None) -> nn.Module:
    """The uncompressed model the folder was made from, for distillation."""
    from ht2.io import read_manifest

    arch = read_manifest(source).get("arch") or {}
    chosen = weights or arch.get("weights")
    if not arch or not chosen:
        raise HT2Error(
            f"--distill needs the uncompressed model's weights; {source}/ht2.json "
            "does not name them: pass --teacher-weights FILE"
        )
    if chosen != "pretrained" and not Path(chosen).is_file():
        raise HT2Error(
            f"--distill: the teacher weights {chosen} named in {source}/ht2.json do "
            "not exist here; pass --teacher-weights FILE"
        )
    return models.create(arch["name"], weights=chosen, **arch.get("kwargs", {}))


def run(args: argparse.Namespace) -> int:
    from ht2.io import load
    from ht2.io.artefacts import read_report, save_into
    from ht2.train import fit
    from ht2.train.runner import prepare_output

    config = config_from_args(args)
    prepare_output(Path(args.out), args.resume, args.force)  # before any work on the model
    source = Path(args.source)
    model = load(source)
    entry = models.get_entry(model.ht2_arch["name"])
    report = read_report(source, required=False)
    teacher = teacher_for(source, args.teacher_weights) if config.distill else None
    if args.calibrate and not args.resume:
        calibrate_on_train_images(
            model, entry, args.data, args.calib_images, config.batch_size, config.workers
        )

    def save_best(trained: nn.Module, out: Path, accuracy: dict) -> None:
        if report is not None:
            report.accuracy = {
                "top1": accuracy["top1"],
                "top5": accuracy["top5"],
                "epoch": accuracy["epoch"],
                "finetune": config.to_dict(),
            }
        save_into(trained, out, report)

    fit(
        model,
        entry,
        args.data,
        config,
        Path(args.out),
        save_best,
        teacher=teacher,
        resume=args.resume,
        force=args.force,
        evaluate_first=not args.resume,
    )
    return 0
