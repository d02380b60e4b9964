"""Batches straight from a decoded split in memory: no loader processes, no decoding.

Training batches are augmented on the split's device (crop with zero padding and flip, see
ht2.data.batch_augment), each image under image_seed(seed, epoch, index) as the file path
does, so an epoch replays exactly after --resume.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from ht2.data.batch_augment import crop_and_flip, crop_flip_choices
from ht2.data.decoded import DecodedSplit
from ht2.train.seeding import image_seed


class MemoryBatches:
    """(normalised float32 images, labels) batches of `split` in the order of `keys`.

    `keys` yields (epoch, index) pairs (an EpochSampler, or a list for evaluation); it is
    read afresh on every pass. With `seed` the images are augmented under
    image_seed(seed, epoch, index); without, they are served as they are.
    """

    def __init__(
        self,
        split: DecodedSplit,
        keys: Iterable[tuple[int, int]],
        batch_size: int,
        drop_last: bool = False,
        seed: int | None = None,
    ) -> None:
        self.split = split
        self.keys = keys
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed

    def __len__(self) -> int:
        count = len(self.keys)  # type: ignore[arg-type]
        if self.drop_last:
            return count // self.batch_size
        return -(-count // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        keys = list(self.keys)
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, len(keys)), self.batch_size):
            yield self.batch(keys[start : start + self.batch_size])

    def batch(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels of `keys`, augmented when this holds a seed."""
        split = self.split
        indices = torch.tensor([index for _, index in keys], device=split.pixels.device)
        pixels = split.pixels.index_select(0, indices)
        if self.seed is not None:
            seeds = [image_seed(self.seed, epoch, index) for epoch, index in keys]
            pixels = crop_and_flip(pixels, *crop_flip_choices(seeds))
        return split.normalise(pixels), split.labels.index_select(0, indices)
