"""Randomness keyed by (seed, epoch, image), so that an epoch replays exactly after --resume.

Each epoch starts from generators seeded with seed + epoch (dropout, lighting noise, the loader),
its order comes from a sampler seeded the same way, and each training image is augmented under
its own seed made from (seed, epoch, index), whichever loader process decodes it and however long
that process has lived (persistent workers would otherwise carry their state across epochs).
Nothing random carries over from one epoch to the next, so a run resumed at an epoch boundary
matches a straight run bit for bit without storing any generator state.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


def reseed(seed: int) -> None:
    """Seed Python's and torch's generators (torch.manual_seed seeds every CUDA device too)."""
    random.seed(seed)
    torch.manual_seed(seed)


def image_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for augmenting image `index` in `epoch`, unrelated to its neighbours'."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class EpochSampler(Sampler[tuple[int, int]]):
    """A DistributedSampler's indices as (epoch, index) pairs, so the dataset knows the epoch."""

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: its order and the seeds of its augmentations."""
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededImages(Dataset):
    """`dataset[index]` drawn under image_seed(seed, epoch, index), for EpochSampler's keys.

    The caller's generators are restored afterwards, so loading in the training process
    (--workers 0) does not disturb the dropout and noise drawn there.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    @property
    def in_memory(self) -> bool:
        return bool(getattr(self.dataset, "in_memory", False))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        python_state, torch_state = random.getstate(), torch.get_rng_state()
        seed = image_seed(self.seed, epoch, index)
        random.seed(seed)
        torch.default_generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(python_state)
            torch.set_rng_state(torch_state)
