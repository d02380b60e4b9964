"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ht2 import models
from ht2.choices import method_names
from ht2.cli.number_args import HIGHEST, non_negative_int, positive_int
from ht2.errors import HT2Error
from ht2.layers.registry import kxk_methods

if TYPE_CHECKING:
    import torch
    from torch import nn


def energy_value(text: str) -> float:
    """argparse type for an energy: a float in (0, 1]."""
    from ht2.decomp import check_energy

    try:
        return check_energy(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"energy must be in (0, 1], got {text}") from None


def add_output_folder(parser: argparse.ArgumentParser) -> None:
    """--out DIR (written whole at the end, under a temporary name until then) and --force."""
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="output folder (must not exist or be empty, unless --force)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a non-empty --out folder that ht2 wrote (it holds ht2.json, log.jsonl or "
        "checkpoint/); any other folder, the current one and those above it are refused "
        "(default: off)",
    )


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """MODEL and where its weights come from: --weights FILE, --pretrained or --random-init."""
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="registry name, e.g. cifar10_resnet20, resnet50 (see `ht2 models`)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--weights",
        metavar="FILE",
        help="state dict to load: .pth/.pt/.th (read with weights_only) or .safetensors",
    )
    source.add_argument(
        "--pretrained",
        action="store_true",
        help="the model's published weights (torchvision downloads them when "
        "online; offline, use --weights)",
    )
    source.add_argument(
        "--random-init",
        action="store_true",
        help="random weights: for trying sizes and speed, not accuracy",
    )


def model_from_args(args: argparse.Namespace) -> nn.Module:
    """Build the model named on the command line with the weights asked for."""
    weights = args.weights or ("pretrained" if args.pretrained else None)
    return models.create(args.model, weights=weights)


def example_input(model_name: str) -> torch.Tensor:
    """A batch of one zero image at the registry's input size."""
    import torch

    return torch.zeros(1, *models.get_entry(model_name).input_size)


def parse_batch_sizes(text: str) -> list[int]:
    """'1,32,128' -> [1, 32, 128]; anything but positive integers is a one-line error."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise HT2Error(
            f"--batch-sizes takes positive integers separated by commas, e.g. 1,32,128; "
            f"got {text!r}"
        ) from None
    bad = [size for size in sizes if not 0 < size <= HIGHEST]
    if bad:
        raise HT2Error(f"--batch-sizes must each be from 1 to {HIGHEST}; got {bad[0]} in {text!r}")
    return list(dict.fromkeys(sizes))


def batch_size_list(text: str) -> list[int]:
    """argparse type: comma-separated positive batch sizes, such as 1,128."""
    try:
        return parse_batch_sizes(text)
    except HT2Error as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def method_list(text: str, extra: tuple[str, ...] = ()) -> list[str]:
    """argparse type: comma-separated decomposition methods, such as ht2,tucker2 (and the
    `extra` names a command also takes)."""

    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in (*method_names(), *extra)]
    if unknown or not names:
        known = ", ".join((*kxk_methods(), *extra))
        raise argparse.ArgumentTypeError(f"methods are among {known}, got {text}")
    return names


def compare_method_list(text: str) -> list[str]:
    """argparse type for `ht2 compare --methods`: decomposition methods, and prune (channel
    pruning to the same target)."""
    return method_list(text, extra=("prune",))


def first_given(*flags: tuple[str, object]) -> str | None:
    """The first flag name among (name, value) pairs whose value was given (truthy), else None."""
    return next((name for name, value in flags if value), None)


def add_workers_arg(parser: argparse.ArgumentParser) -> None:
    """--workers: data-loading processes."""
    parser.add_argument(
        "--workers", type=non_negative_int, default=2, help="data workers (default: 2)"
    )


def add_timing_args(parser: argparse.ArgumentParser) -> None:
    """--batch-sizes and --repeats, for the commands that time each model they build."""
    parser.add_argument(
        "--batch-sizes",
        type=batch_size_list,
        default=[1, 128],
        help="batch sizes to time (default: 1,128)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=10,
        help="timed runs per model and batch size (default: 10)",
    )
