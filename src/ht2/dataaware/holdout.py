"""Checks on held-out calibration images: how far a compressed model's outputs are from the
original's, and whether BatchNorm re-estimation brings them closer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ht2.layers.norms import norm_states
from ht2.train.calibrate import recalibrate_batchnorm


def outputs_of(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's outputs on `images`, batch by batch, in eval mode."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(chunk) for chunk in images.split(batch_size)])


def output_gap(reference: torch.Tensor, outputs: torch.Tensor) -> float:
    """Mean KL divergence from the reference's class probabilities (2-D outputs, logits), or
    the relative squared error of the outputs for other shapes."""
    if reference.dim() == 2:
        return float(
            F.kl_div(
                F.log_softmax(outputs, dim=1),
                F.log_softmax(reference, dim=1),
                log_target=True,
                reduction="batchmean",
            )
        )
    return float((outputs - reference).square().sum() / reference.square().sum().clamp_min(1e-30))


def agreement(reference: torch.Tensor, outputs: torch.Tensor) -> float | None:
    """Percentage of images whose top-1 class matches the reference's (2-D outputs only)."""
    if reference.dim() != 2:
        return None
    return 100.0 * float((reference.argmax(1) == outputs.argmax(1)).float().mean())


def calibrate_if_better(
    model: nn.Module,
    fit_images: torch.Tensor,
    held_out: torch.Tensor,
    reference: torch.Tensor,
    batch_size: int,
) -> dict:
    """Re-estimate BatchNorm statistics on `fit_images`; keep them only if the held-out gap
    to the reference outputs went down. Returns the gaps and the decision."""
    before = output_gap(reference, outputs_of(model, held_out, batch_size))
    restore = norm_states(model)
    recalibrate(model, fit_images, batch_size)
    after = output_gap(reference, outputs_of(model, held_out, batch_size))
    kept = after < before
    if not kept:
        restore()
    return {"gap_before": before, "gap_after": after, "kept": kept}


def recalibrate(model: nn.Module, images: torch.Tensor, batch_size: int) -> int:
    """BatchNorm re-estimation on in-memory images (labels are not needed)."""
    batches = ((chunk, None) for chunk in images.split(batch_size))
    return recalibrate_batchnorm(model, batches, len(images), progress=False)
