"""The description of one model name: what to build, how to feed it, where its weights are."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Returns the model with its pretrained weights and the kwargs that rebuild its architecture.
PretrainedLoader = Callable[[dict[str, Any]], "tuple[nn.Module, dict[str, Any]]"]


@dataclass(frozen=True)
class ModelEntry:
    """One model name: its input format, its classes and how to build it."""

    name: str
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    family: str
    resize: int | None
    build: Callable[..., nn.Module] = field(repr=False, compare=False)
    pretrained: PretrainedLoader = field(repr=False, compare=False)
