"""Calibration images in memory: gathered from a loader, split into fitting and held out."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ht2.errors import HT2Error

SPLIT_SEED = 0
MAX_HELD_OUT = 256


def gather_images(batches: Iterable, count: int) -> torch.Tensor:
    """The first `count` images of `batches` (tensors, or (images, labels) pairs) as one tensor.

    HT2Error when fewer are available: a fit on fewer images than asked for is not what the
    user measured.
    """
    if count < 1:
        raise HT2Error(f"--calib-images must be at least 1, not {count}")
    chunks: list[torch.Tensor] = []
    seen = 0
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if seen >= count:
            break
        images = images[: count - seen]
        chunks.append(images)
        seen += len(images)
    if seen < count:
        raise HT2Error(
            f"only {seen} calibration images are available but {count} were asked for; "
            "lower --calib-images or give a larger data set"
        )
    return torch.cat(chunks)


def split_held_out(images: torch.Tensor, held_out: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, held_out) by a fixed shuffle; `held_out` defaults to min(256, N // 4)."""
    n = len(images)
    size = min(MAX_HELD_OUT, n // 4) if held_out is None else held_out
    if not 0 <= size < n:
        raise HT2Error(f"held-out images must be between 0 and {n - 1}, not {size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return images[order[size:]], images[order[:size]]
