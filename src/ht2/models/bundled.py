"""Pretrained weights shipped inside the package (ht2/models/pretrained/<name>.safetensors)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ht2.errors import HT2Error
from ht2.models.weights import load_weights

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def bundled_path(name: str) -> Path:
    """Where the bundled pretrained weights of model `name` live (the file may be absent)."""
    return PRETRAINED_DIR / f"{name}.safetensors"


def bundled_loader(
    name: str, build: Callable[..., nn.Module]
) -> Callable[[dict[str, Any]], tuple[nn.Module, dict[str, Any]]]:
    """A pretrained loader that builds `name` and loads its bundled weights file."""

    def load(kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
        path = bundled_path(name)
        if not path.is_file():
            raise HT2Error(
                f"no pretrained weights are bundled for '{name}'; pass weights=FILE",
                params="weights=FILE",
            )
        model = build(**kwargs)
        model.ht2_arch = {"name": name, "kwargs": dict(kwargs)}
        load_weights(model, path)
        return model, dict(kwargs)

    return load
