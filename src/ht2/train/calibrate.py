"""Re-estimate BatchNorm running statistics on real images: no gradient step."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ht2.layers.norms import NORMS


def recalibrate_batchnorm(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    images: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> int:
    """Reset every BatchNorm's running mean/var and re-estimate them on `images` images.

    Statistics are the plain average over the images seen (momentum None), with the rest of
    the model in eval mode (dropout off). Returns the number of images used. Why: after
    decomposition each layer's output distribution shifts, and stale BN statistics amplify
    that error layer by layer.
    """
    norms = [m for m in model.modules() if isinstance(m, NORMS)]
    if not norms:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.to(device).eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    seen = 0
    bar = tqdm(
        total=images,
        desc="calibrating BN",
        unit="img",
        file=sys.stderr,
        disable=None if progress else True,  # None: off when not a terminal
        leave=False,
    )
    try:
        with torch.no_grad():
            for inputs, _ in batches:
                if seen >= images:
                    break
                inputs = inputs[: images - seen].to(device)
                if len(inputs) == 0:
                    continue
                model(inputs)
                seen += len(inputs)
                bar.update(len(inputs))
    finally:
        bar.close()
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return seen
