"""`ht2 evaluate`: top-1/top-5 accuracy of a model or a compressed model folder on a data set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ht2.choices import DTYPES
from ht2.cli.number_args import non_negative_int, positive_int
from ht2.cli.threads_arg import add_threads_arg
from ht2.errors import HT2Error
from ht2.io.model_source import is_model_dir, load_model_or_dir

DESCRIPTION = """\
Measure the top-1 and top-5 accuracy and the throughput of a registry model (with
--weights FILE or --pretrained) or of a folder written by `ht2 compress`, on the test
(else val) split of a data set, with the model's own resize, crop and normalisation.
Use --limit N for a quick class-balanced estimate and --cache to decode the images once.
"""
EXAMPLES = """examples:
  ht2 evaluate cifar10_resnet20 --weights resnet20.th --data cifar10-jpeg/ --cache
  ht2 evaluate out/r20-e0.9 --data cifar10-jpeg/ --cache --json
  ht2 evaluate resnet50 --pretrained --data imagenet/ --split val --limit 1000 --device cuda
  ht2 evaluate cifar10_resnet20 --weights resnet20.th --data cifar10          # torchvision copy

--data PATH is an ImageFolder tree (PATH/test or PATH/val, and PATH/train, each holding
<class>/<image> files; classes in sorted folder-name order), a .tar.gz of one (extracted
once into the cache), or cifar10[:ROOT] for torchvision's CIFAR-10 python batches
(downloaded into ROOT, by default ~/.cache/ht2/cifar10, when online). The cache folder is
$HT2_CACHE_DIR, else ~/.cache/ht2.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure top-1/top-5 accuracy on a data set",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        metavar="MODEL|DIR",
        help="registry name (see `ht2 models`) with --weights or --pretrained, or a folder "
        "written by `ht2 compress` (required)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--weights",
        metavar="FILE",
        help="state dict for MODEL: .pth/.pt/.th (read with weights_only) or .safetensors "
        "(default: none)",
    )
    source.add_argument(
        "--pretrained",
        action="store_true",
        help="MODEL's published weights (downloaded when online) (default: off)",
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="ImageFolder tree, .tar.gz of one, or cifar10[:ROOT] (required)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "val", "train"),
        help="which split to score (default: test if PATH has it, else val)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=256,
        metavar="N",
        help="images per batch (default: 256)",
    )
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="processes decoding images; 0 decodes in this one (default: 2)",
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="score N images, class-balanced and the same ones every run (default: all)",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="decode the split once into ~/.cache/ht2/tensors and reuse it (default: off)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="where to run the model (default: cuda if available, else cpu)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="bfloat16 runs the model under autocast, as `ht2 benchmark --dtype bfloat16` "
        "times it, so the accuracy belongs to that speed (default: float32)",
    )
    add_threads_arg(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print {top1, top5, n, images_per_second} as JSON, with dtype when bfloat16 "
        "(default: a short summary)",
    )
    parser.set_defaults(run=run)


def _weights(args: argparse.Namespace) -> str | None:
    if is_model_dir(args.model):
        if args.pretrained:
            raise HT2Error(f"{args.model} is a compressed model folder; drop --pretrained")
        return args.weights
    if Path(args.model).exists():
        raise HT2Error(
            f"{args.model} is not a model name nor a folder written by `ht2 compress` (no ht2.json)"
        )
    if not args.weights and not args.pretrained:
        raise HT2Error(
            f"give {args.model}'s weights with --weights FILE or --pretrained "
            "(random weights score at chance)"
        )
    return args.weights or ("pretrained" if args.pretrained else None)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _summary(args: argparse.Namespace, device: str, dataset: Any, result: dict[str, Any]) -> str:
    top5 = "n/a" if result["top5"] is None else f"{result['top5']:.2f} %"
    skipped = len(dataset) - result["n"]
    lines = [
        f"model   {args.model}",
        f"data    {dataset.location} ({dataset.split} split, {result['n']} images"
        + (f", {skipped} undecodable skipped)" if skipped else ")"),
        f"dtype   {args.dtype}" + (" (autocast)" if args.dtype == "bfloat16" else ""),
        f"top-1   {result['top1']:.2f} %",
        f"top-5   {top5}",
        f"speed   {result['images_per_second']:.0f} images/s "
        f"({result['seconds']:.1f} s on {device})",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # Imported here: torchvision's import would slow every other `ht2` command's start.
    from ht2.data import eval_dataset, make_loader
    from ht2.data.datasets import check_classes
    from ht2.data.loader import check_batch_size, check_workers
    from ht2.device import resolve_device
    from ht2.metrics.accuracy import evaluate_accuracy
    from ht2.metrics.treatment import warn_if_emulated

    check_batch_size(args.batch_size)
    check_workers(args.workers)
    if args.limit is not None and args.limit <= 0:
        raise HT2Error(f"--limit must be a positive number of images, not {args.limit}")
    device = resolve_device(args.device)
    warn_if_emulated(args.dtype, device)
    model, entry = load_model_or_dir(args.model, _weights(args))
    dataset = eval_dataset(args.data, entry, split=args.split, limit=args.limit, cache=args.cache)
    check_classes(dataset, model, entry, args.model)
    loader = make_loader(dataset, args.batch_size, workers=args.workers)
    result = evaluate_accuracy(
        model, loader, device=device, progress=not args.json, desc=entry.name, dtype=args.dtype
    )
    if result["n"] == 0:
        raise HT2Error(f"no image in {dataset.location} could be decoded; nothing was scored")
    if args.json:
        figures = {
            "top1": _rounded(result["top1"], 4),
            "top5": _rounded(result["top5"], 4),
            "n": result["n"],
            "images_per_second": _rounded(result["images_per_second"], 1),
        }
        if args.dtype != "float32":
            figures["dtype"] = args.dtype
        print(json.dumps(figures))
    else:
        print(_summary(args, device, dataset, result))
    return 0
