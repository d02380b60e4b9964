"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ht2 import models


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
    return torch.zeros(1, *models.get_entry(model_name).input_size)
