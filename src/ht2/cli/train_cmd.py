"""`ht2 train`: train a registry model from scratch (or from --weights) with a recipe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ht2 import models
from ht2.cli.threads_arg import add_threads_arg
from ht2.cli.training_args import add_training_args, config_from_args

if TYPE_CHECKING:
    from torch import nn

EXAMPLES = """examples:
  ht2 train cifar10_resnet20 --data ~/data/cifar10 --recipe resnet-cifar10 --out runs/r20
  ht2 train cifar10_densenet40 --data ~/data/cifar10 --recipe densenet40-cifar10 --out runs/d40
  torchrun --standalone --nproc_per_node=4 -m ht2 train resnet18 --data ~/imagenet --epochs 90 \\
      --lr 0.1 --schedule step --step-size 30 --out runs/r18
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a registry model (CPU, GPU, torchrun)",
        description="Train a registry model from scratch. Keeps the best epoch as "
        "OUT/model.safetensors + OUT/ht2.json (load with ht2.load), a checkpoint every epoch "
        "in OUT/checkpoint/ and one JSON line per epoch in OUT/log.jsonl.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="registry name (see `ht2 models`)")
    parser.add_argument(
        "--weights", metavar="FILE", help="start from these weights (default: random init)"
    )
    add_training_args(parser, default_recipe=None)
    add_threads_arg(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ht2.io.artefacts import save_into
    from ht2.train import fit
    from ht2.train.runner import reseed

    config = config_from_args(args)
    entry = models.get_entry(args.model)
    reseed(config.seed)  # the same random init every time, so --resume matches a straight run
    model = models.create(args.model, weights=args.weights)

    def save_best(trained: nn.Module, out: Path, accuracy: dict) -> None:
        save_into(trained, out, None)

    fit(
        model,
        entry,
        args.data,
        config,
        Path(args.out),
        save_best,
        resume=args.resume,
        force=args.force,
    )
    return 0
