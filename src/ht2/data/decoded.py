"""A small split decoded once into uint8 tensors, so that an epoch costs no image decoding.

CIFAR-10's 50,000 training images take 150 MB as uint8. Held in memory (on the GPU when the
run trains there), they are cropped, flipped (ht2.data.batch_augment) and normalised in
batches. The pixels come from eval_dataset's tensor cache: decoded once per data set, by
several processes, and reused by later runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ht2.data.datasets import eval_dataset, split_size
from ht2.data.transforms import Normalise, is_cifar
from ht2.models import ModelEntry

IN_MEMORY_LIMIT_BYTES = 1 << 30  # the largest decoded training split kept in memory by default


@dataclass(frozen=True)
class DecodedSplit:
    """uint8 pixels (N, C, H, W) and int64 labels (N) of a split, with its normalisation."""

    pixels: torch.Tensor
    labels: torch.Tensor
    normalise: Normalise
    classes: list[str]
    split: str
    location: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return self.pixels.numel() * self.pixels.element_size()

    def to(self, device: torch.device | str) -> DecodedSplit:
        """The same split with its tensors on `device`."""
        return replace(
            self,
            pixels=self.pixels.to(device),
            labels=self.labels.to(device),
            normalise=self.normalise.to(device),
        )


def augments_in_batches(entry: ModelEntry) -> bool:
    """True when `entry`'s training augmentation can run on decoded tensors: CIFAR-style models
    take native-size images (crop and flip); ImageNet-style random resized crops need the files."""
    return is_cifar(entry)


def decoded_bytes(data: str, entry: ModelEntry, split: str, limit: int | None = None) -> int:
    """The bytes `split` of `data` takes decoded as uint8 at `entry`'s input size."""
    return split_size(data, split, limit) * math.prod(entry.input_size)


def decoded_split(
    data: str, entry: ModelEntry, split: str | None = None, limit: int | None = None
) -> DecodedSplit:
    """`split` of `data` (default: the evaluation split) as uint8 tensors at `entry`'s
    evaluation pixels (for CIFAR models, the images as they are), decoded once into the cache.

    `limit` keeps that many images, class-balanced, as eval_dataset does. Images that cannot
    be decoded are left out (one warning says how many).
    """
    cached = eval_dataset(data, entry, split=split, limit=limit, cache=True)
    images = cached.base
    return DecodedSplit(
        images.pixels,
        images.labels,
        images.normalise,
        cached.classes,
        cached.split,
        cached.location,
    )
