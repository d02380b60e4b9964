"""Calibration images in memory: the first N images of any batches, or a refusal naming the
counts. Every step that fits or measures on calibration images gathers them here, so a data
set that is too small is refused the same way everywhere instead of silently using fewer."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ht2.errors import HT2Error


def gather_images(batches: Iterable, count: int) -> torch.Tensor:
    """The first `count` images of `batches` (tensors, or (images, labels) pairs) as one tensor.

    HT2Error when there are fewer: a fit or a measurement on fewer images than asked for is
    not the one the user asked for.
    """
    if count < 1:
        raise HT2Error(f"the number of calibration images must be at least 1, not {count}")
    chunks: list[torch.Tensor] = []
    seen = 0
    for batch in batches:
        if seen >= count:
            break
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        chunks.append(images[: count - seen])
        seen += len(chunks[-1])
    if seen < count:
        raise HT2Error(
            f"only {seen} calibration images, fewer than the {count} needed; give more images "
            "or ask for fewer"
        )
    return torch.cat(chunks)
