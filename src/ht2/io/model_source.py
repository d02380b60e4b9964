"""A model named by a registry name or by a folder `ht2 compress` wrote: one way to read
either, for the tools that accept both (evaluate, benchmark, export, compare)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ht2.errors import HT2Error

if TYPE_CHECKING:
    from torch import nn

    from ht2.models import ModelEntry


def is_model_dir(spec: str) -> bool:
    """True when `spec` names a compressed model folder (it holds ht2.json)."""
    from ht2.io.artefacts import MANIFEST

    return Path(spec).is_dir() and (Path(spec) / MANIFEST).is_file()


def load_model_or_dir(spec: str, weights: str | None = None) -> tuple[nn.Module, ModelEntry]:
    """A compressed model folder (DIR with ht2.json) or a registry name with optional weights.

    Returns the model and its registry entry (input size, normalisation). A folder saved from
    a model outside the registry cannot be used here (no entry).
    """
    from ht2 import models
    from ht2.io.artefacts import load

    if is_model_dir(spec):
        if weights:
            raise HT2Error(
                f"{spec} is a compressed model folder, which holds its own tensors: do not "
                "also give weights",
                params="weights",
            )
        model = load(spec)
        return model, models.get_entry(model.ht2_arch["name"])
    if Path(spec).exists():
        raise HT2Error(
            f"{spec} is not a model name nor a folder written by `ht2 compress` (no ht2.json)"
        )
    return models.create(spec, weights=weights), models.get_entry(spec)
