"""Save a model folder only once it is shown to load back to the very same model."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.io.artefacts import load, write_model
from ht2.io.atomic import atomic_directory
from ht2.surgery import CompressionReport


def save_verified(
    model: nn.Module,
    directory: str | os.PathLike,
    input_size: tuple[int, ...],
    report: CompressionReport | None = None,
    overwrite: bool = False,
) -> Path:
    """Save `model` (and `report`) as ht2.save does, after checking that the folder loads back
    to a model whose outputs on a seeded batch of two `input_size` samples equal `model`'s
    exactly; otherwise HT2Error and nothing is written. Why: a transformed model (BatchNorms
    folded, say) must not be written in a form that rebuilds into something else."""
    with atomic_directory(Path(directory), overwrite=overwrite) as staging:
        write_model(model, staging, report)
        x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            if not torch.equal(load(staging)(x), model.eval()(x)):
                raise HT2Error(
                    "the written folder does not load back to this model; nothing written"
                )
    return Path(directory)
