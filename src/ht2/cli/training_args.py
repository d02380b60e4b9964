"""Training flags shared by `ht2 train` and `ht2 finetune`; each help shows its default."""

from __future__ import annotations

import argparse

from ht2.choices import AMP_NAMES, SCHEDULES
from ht2.cli.number_args import (
    HIGHEST,
    below_one,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    real_number,
)
from ht2.errors import HT2Error
from ht2.train.config import RECIPES, TrainConfig, recipe_config


def _milestones(text: str) -> list[int]:
    """Epochs in increasing order, each at least 1, such as 150,225."""
    try:
        epochs = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        epochs = []
    increasing = all(a < b for a, b in zip(epochs, epochs[1:], strict=False))
    if not epochs or not increasing or epochs[0] < 1 or epochs[-1] > HIGHEST:
        raise argparse.ArgumentTypeError(
            f"milestones are increasing epochs like 150,225, got {text}"
        )
    return epochs


def add_training_args(parser: argparse.ArgumentParser, default_recipe: str | None) -> None:
    """The optimiser, schedule and run flags; a recipe fills what the flags leave unset."""
    d = TrainConfig() if default_recipe is None else recipe_config(default_recipe)
    add = parser.add_argument
    add(
        "--data",
        required=True,
        metavar="PATH",
        help="CIFAR-10 or ImageNet-style folder with train/ and test/ (or val/), a .tar.gz of "
        "one, or cifar10[:ROOT] for torchvision's format",
    )
    add(
        "--recipe",
        choices=sorted(RECIPES),
        default=default_recipe,
        help=f"preset of the options below; flags override it (default: {default_recipe})",
    )
    add("--epochs", type=positive_int, help=f"epochs (default: {d.epochs})")
    add("--lr", type=positive_float, help=f"peak learning rate (default: {d.lr})")
    add("--momentum", type=below_one, help=f"SGD momentum (default: {d.momentum})")
    add(
        "--nesterov",
        action=argparse.BooleanOptionalAction,
        help=f"Nesterov momentum (default: {d.nesterov})",
    )
    add(
        "--wd",
        dest="weight_decay",
        type=non_negative_float,
        help=f"weight decay, not applied to biases and norms (default: {d.weight_decay})",
    )
    add(
        "--batch-size",
        type=positive_int,
        help=f"global batch, split across torchrun processes (default: {d.batch_size})",
    )
    add("--schedule", choices=SCHEDULES, help=f"learning-rate schedule (default: {d.schedule})")
    add(
        "--milestones",
        type=_milestones,
        help="epochs where multistep multiplies the lr by "
        f"--gamma, e.g. 150,225 (default: {','.join(map(str, d.milestones)) or 'none'})",
    )
    add(
        "--step-size",
        type=positive_int,
        help=f"epochs between step decays (default: {d.step_size})",
    )
    add(
        "--gamma",
        type=real_number(0.0, 1.0, above=True),
        help=f"decay factor of multistep/step, in (0, 1] (default: {d.gamma})",
    )
    add("--label-smoothing", type=below_one, help=f"label smoothing (default: {d.label_smoothing})")
    add(
        "--max-steps",
        type=positive_int,
        help="stop after this many optimiser steps, for smoke runs (default: no limit)",
    )
    add(
        "--amp",
        choices=["auto", "none", *AMP_NAMES],
        help="mixed precision: bf16 autocast on CPU or CUDA, fp16 (with loss scaling) on CUDA "
        "only, none for float32; auto is bf16 on a CPU with native bfloat16 (AVX-512 BF16 or "
        f"AMX), else none (default: {d.amp})",
    )
    add(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        help="channels_last memory format (default: "
        + ("on for CPU, off for CUDA" if d.channels_last is None else str(d.channels_last))
        + ")",
    )
    add(
        "--in-memory",
        action=argparse.BooleanOptionalAction,
        help="decode the training and evaluation splits once (cached) and augment the "
        "training images in batches on the training device, instead of decoding files every "
        "epoch; CIFAR-style models only (default: on when the decoded training split takes "
        "at most 1 GiB)",
    )
    add(
        "--ema",
        type=below_one,
        metavar="DECAY",
        help="keep an exponential moving average of the weights, DECAY per step (0.999 spans "
        "about 1,000 steps), and evaluate and save it instead of the live weights "
        f"(default: {d.ema or 'off'})",
    )
    add("--clip-grad", type=positive_float, help="clip the gradient norm to this (default: off)")
    add(
        "--lighting",
        type=non_negative_float,
        help=f"PCA lighting noise std (default: {d.lighting})",
    )
    add("--seed", type=non_negative_int, help=f"random seed (default: {d.seed})")
    add(
        "--workers",
        type=non_negative_int,
        help="data loading processes per training process, when images are decoded every "
        f"epoch (see --in-memory) (default: {d.workers})",
    )
    add(
        "--train-limit",
        type=positive_int,
        help="use only this many training images, class-balanced (default: all)",
    )
    add(
        "--eval-limit",
        type=positive_int,
        help="evaluate on this many images, class-balanced (default: all)",
    )
    add("--device", choices=["auto", "cpu", "cuda"], help=f"where to train (default: {d.device})")
    add(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder: best model, log.jsonl, "
        "checkpoint/ (must not exist or be empty, unless --resume or --force)",
    )
    add("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add(
        "--force",
        action="store_true",
        help="start again in a non-empty --out that holds an ht2 run or model (deleting it); "
        "any other folder is refused (default: off)",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe's config with every flag the user gave laid over it."""
    if args.resume and args.force:
        raise HT2Error("--resume and --force contradict each other; pick one")
    base = recipe_config(args.recipe)
    names = TrainConfig.__dataclass_fields__
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return base.updated(**given)
