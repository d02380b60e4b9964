"""Calibration images (gathered by ht2.data.gather) split into fitting and held out."""

from __future__ import annotations

import torch

from ht2.errors import HT2Error

SPLIT_SEED = 0
MAX_HELD_OUT = 256


def split_held_out(images: torch.Tensor, held_out: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, held_out) by a fixed shuffle; `held_out` defaults to min(256, N // 4)."""
    n = len(images)
    size = min(MAX_HELD_OUT, n // 4) if held_out is None else held_out
    if not 0 <= size < n:
        raise HT2Error(f"held-out images must be between 0 and {n - 1}, not {size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return images[order[size:]], images[order[:size]]
