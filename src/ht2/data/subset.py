"""A split as a dataset with its metadata, optionally cut to a class-balanced subset."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from ht2.errors import HT2Error

LIMIT_SEED = 0


def balanced_indices(targets: Sequence[int], limit: int | None) -> list[int]:
    """`limit` sample indices spread evenly over the classes, the same ones on every call.

    Each class's indices are shuffled with a fixed seed and the classes are then taken in
    turn, so any `limit` holds each class about equally. Sorted; None takes everything.
    """
    if limit is None:
        return list(range(len(targets)))
    if limit <= 0:
        raise HT2Error(f"limit must be a positive number of images, not {limit}", params="limit")
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(targets):
        by_class.setdefault(int(label), []).append(index)
    rng = random.Random(LIMIT_SEED)
    queues = []
    for label in sorted(by_class):
        indices = by_class[label]
        rng.shuffle(indices)
        queues.append(indices)
    chosen: list[int] = []
    for rank in range(max(map(len, queues), default=0)):
        chosen.extend(queue[rank] for queue in queues if rank < len(queue))
        if len(chosen) >= limit:
            break
    return sorted(chosen[:limit])


class SplitDataset(Dataset):
    """Samples `indices` of `base`, with the split's classes, targets and where it came from."""

    def __init__(
        self,
        base: Any,
        indices: list[int],
        classes: list[str],
        split: str,
        location: str,
    ) -> None:
        self.base = base
        self.indices = indices
        self.classes = classes
        base_targets = base.targets
        self.targets = [int(base_targets[i]) for i in indices]
        self.split = split
        self.location = location

    @property
    def in_memory(self) -> bool:
        """True when samples come from tensors already in memory (no decoding)."""
        return bool(getattr(self.base, "in_memory", False))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.base[self.indices[index]]
