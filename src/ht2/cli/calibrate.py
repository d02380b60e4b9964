"""`ht2 calibrate`: re-estimate BatchNorm statistics of a compressed model, no training."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ht2 import models
from ht2.cli.common import add_output_folder
from ht2.cli.number_args import non_negative_int, positive_int

if TYPE_CHECKING:
    from torch import nn

    from ht2.models import ModelEntry

EXAMPLES = """examples:
  ht2 calibrate out/r20-e0.9 --data ~/data/cifar10 --out out/r20-e0.9-cal
  ht2 calibrate out/r20-e0.9 --data ~/data/cifar10 --images 4096 --evaluate --out out/cal
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="re-estimate BatchNorm statistics of a compressed model",
        description="Reset every BatchNorm's running mean and variance and re-estimate them on "
        "training images (evaluation transform, no gradient step), then write a compressed "
        "model folder again. Recovers much of the accuracy that decomposition loses.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="DIR", help="compressed model folder (ht2 compress)")
    parser.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="data folder with train/ (as for `ht2 evaluate`)",
    )
    parser.add_argument(
        "--images",
        type=positive_int,
        default=2048,
        help="training images to use, class-balanced (default: 2048)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=256, help="batch size (default: 256)"
    )
    parser.add_argument(
        "--workers", type=non_negative_int, default=2, help="data workers (default: 2)"
    )
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="also measure top-1/top-5 on the eval split before and after (default: off)",
    )
    add_output_folder(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def calibrate_on_train_images(
    model: nn.Module, entry: ModelEntry, data: str, images: int, batch_size: int, workers: int
) -> int:
    """Recalibrate `model`'s BatchNorms on `images` class-balanced training images."""
    from ht2.data import make_loader, train_dataset  # torchvision: only when data is read
    from ht2.data.datasets import check_classes
    from ht2.train import recalibrate_batchnorm

    dataset = train_dataset(data, entry, augment=False, limit=images)
    check_classes(dataset, model, entry, entry.name)
    if len(dataset) < images:
        print(
            f"note: only {len(dataset)} training images available for calibration", file=sys.stderr
        )
    loader = make_loader(dataset, batch_size, workers)
    return recalibrate_batchnorm(model, loader, len(dataset))


def _accuracy(model: nn.Module, entry: ModelEntry, data: str, args) -> dict:
    from ht2.data import eval_dataset, make_loader
    from ht2.data.datasets import check_classes
    from ht2.metrics.accuracy import evaluate_accuracy

    dataset = eval_dataset(data, entry, cache=True)
    check_classes(dataset, model, entry, entry.name)
    loader = make_loader(dataset, args.batch_size, args.workers)
    return evaluate_accuracy(model, loader, "cpu", progress=not args.json)


def run(args: argparse.Namespace) -> int:
    from ht2.io import atomic_directory, check_output_dir, load
    from ht2.io.artefacts import read_report, write_model

    check_output_dir(args.out, overwrite=args.force)
    model = load(args.source)
    entry = models.get_entry(model.ht2_arch["name"])
    result: dict = {"images": 0}
    if args.evaluate:
        result["before"] = _accuracy(model, entry, args.data, args)
    result["images"] = calibrate_on_train_images(
        model, entry, args.data, args.images, args.batch_size, args.workers
    )
    if args.evaluate:
        result["after"] = _accuracy(model, entry, args.data, args)
    report = read_report(args.source, required=False)
    if report is not None and args.evaluate:
        after = result["after"]
        report.accuracy = {
            "top1": after["top1"],
            "top5": after["top5"],
            "calibrated_images": result["images"],
        }
    with atomic_directory(args.out, overwrite=args.force) as staging:
        write_model(model, staging, report)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        line = f"calibrated BatchNorm statistics on {result['images']} images"
        if args.evaluate:
            line += f"; top-1 {result['before']['top1']:.2f} % -> {result['after']['top1']:.2f} %"
        print(line)
        print(f"wrote {args.out}/", file=sys.stderr)
    return 0
