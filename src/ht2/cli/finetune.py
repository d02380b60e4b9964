"""`ht2 finetune`: fine-tune a compressed model folder back to accuracy."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ht2 import models
from ht2.cli.number_args import fraction, non_negative_float, positive_float, positive_int
from ht2.cli.threads_arg import add_threads_arg
from ht2.cli.training_args import add_training_args, config_from_args
from ht2.errors import HT2Error

if TYPE_CHECKING:
    from torch import nn

NO_TEACHER = "note: fine-tuning without distillation: "

EXAMPLES = """examples:
  ht2 finetune out/r20-e0.7 --data ~/data/cifar10 --epochs 5 --out out/r20-e0.7-ft
  ht2 finetune out/r20-e0.7 --data ~/data/cifar10 --epochs 5 --no-distill --out out/r20-e0.7-ce
  ht2 finetune out/r20-e0.7 --data ~/data/cifar10 --budget-minutes 30 --out out/r20-e0.7-30m
  torchrun --standalone --nproc_per_node=2 -m ht2 finetune out/r18 --data ~/imagenet \\
      --recipe finetune-imagenet --out out/r18-ft
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a compressed model folder",
        description="Fine-tune a folder written by `ht2 compress` and write a compressed model "
        "folder again (same format, report.json gains the accuracy). BatchNorm statistics are "
        "re-estimated first (see `ht2 calibrate`) and kept where they lower the loss on "
        "held-out training images, and the model is evaluated before training. "
        "The uncompressed model teaches by distillation when its weights are known.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="DIR", help="compressed model folder (ht2 compress)")
    add_training_args(parser, default_recipe="finetune-cifar10")
    parser.add_argument(
        "--distill",
        action=argparse.BooleanOptionalAction,
        help="add knowledge distillation from the uncompressed model whose weights DIR/ht2.json "
        "records (the bundled or published ones, or a file); --no-distill turns it off "
        "(default: on when those weights are known here, else off, said in one line)",
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
        "--distill-blocks",
        type=non_negative_float,
        metavar="W",
        help="with distillation, also pull each residual block's output towards the "
        "uncompressed model's, with weight W on that term (relative squared error, mean over "
        "the blocks; default: 0, off)",
    )
    parser.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="skip the BatchNorm re-estimation before training (default: re-estimate, and "
        "keep the new statistics only if they lower the cross-entropy on held-out images)",
    )
    parser.add_argument(
        "--calib-images",
        type=positive_int,
        help="training images drawn for the calibration, every fifth held out to decide "
        "whether it is kept; more than the split holds is refused (default: 2048, or the "
        "whole split when smaller)",
    )
    parser.add_argument(
        "--budget-minutes",
        type=positive_float,
        metavar="M",
        help="instead of --epochs: time a few training steps and evaluation batches here, then "
        "train as many epochs as fit in M minutes (printed; default: off)",
    )
    add_threads_arg(parser)
    parser.set_defaults(run=run)


def choose_teacher(
    source: Path, distill: bool | None, weights: str | None
) -> tuple[nn.Module | None, str | None]:
    """ht2.train.teacher.choose_teacher, its note written for the command line."""
    from ht2.cli.flag_names import with_flags
    from ht2.train.teacher import TEACHER_PARAMS
    from ht2.train.teacher import choose_teacher as choose

    teacher, why = choose(source, distill, weights)
    if why is None:
        return teacher, None
    note = with_flags(HT2Error(why, params=TEACHER_PARAMS))
    return None, NO_TEACHER + note


def check_budget_args(args: argparse.Namespace) -> None:
    """One-line errors for --budget-minutes with flags that fix the epochs another way."""
    if args.budget_minutes is None:
        return
    if args.epochs is not None:
        raise HT2Error("give --epochs or --budget-minutes, not both")
    if args.resume:
        raise HT2Error(
            "--resume continues a run with the epochs it was planned for; drop --budget-minutes"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise HT2Error(
            "--budget-minutes times this process alone, and torchrun processes could choose "
            "different epochs; give --epochs"
        )


def run(args: argparse.Namespace) -> int:
    from ht2.io import load
    from ht2.io.artefacts import read_report, save_into
    from ht2.train import fit
    from ht2.train.runner import prepare_output

    config = config_from_args(args)
    check_budget_args(args)
    source = Path(args.source)
    model = load(source)
    entry = models.get_entry(model.ht2_arch["name"])
    report = read_report(source, required=False)
    prepare_output(Path(args.out), args.resume, args.force)  # a bad --out fails before any work
    teacher, note = choose_teacher(source, args.distill, args.teacher_weights)
    config = config.updated(distill=teacher is not None)
    if config.distill_blocks > 0 and teacher is None:
        why = "--no-distill was given" if args.distill is False else note.removeprefix(NO_TEACHER)
        raise HT2Error(f"--distill-blocks needs the uncompressed model as teacher: {why}")
    if args.budget_minutes is not None:
        from ht2.recipes.budget import epochs_within

        budget = epochs_within(model, entry, args.data, config, args.budget_minutes, teacher)
        config = config.updated(epochs=budget.epochs)
        print(
            f"--budget-minutes {args.budget_minutes:g}: {budget.describe(config.batch_size)}; "
            f"training {budget.epochs} epochs (--epochs {budget.epochs})",
            file=sys.stderr,
        )

    if args.calibrate and not args.resume:
        from ht2.train.calibration import calibrate_if_it_helps

        calibration = calibrate_if_it_helps(
            model, entry, args.data, args.calib_images, config.batch_size, config.workers
        )
        print(calibration.describe(), file=sys.stderr)
    if note:
        print(note, file=sys.stderr)

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
