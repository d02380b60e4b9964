"""CIFAR's training augmentation on a batch of uint8 tensors: random crop with zero padding,
then a horizontal flip, on whatever device the pixels are on.

The same augmentation as `train_transform` for CIFAR entries (RandomCrop(padding=4) then
RandomHorizontalFlip), drawn differently: each image's offsets and flip come from an integer
seed of its own (see `crop_flip_choices`), not from a generator, so a batch is augmented the
same way on any device, in any order and after any resume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ht2.data.transforms import CIFAR_PADDING


def crop_flip_choices(
    seeds: Sequence[int], padding: int = CIFAR_PADDING
) -> tuple[list[int], list[int], list[bool]]:
    """Per image: top offset, left offset (each in [0, 2 * padding]) and whether to flip.

    Read from the seed's digits in base 2 * padding + 1 (then 2), so each of the
    (2p + 1)^2 * 2 outcomes is equally likely for a uniform 63-bit seed, up to 2^-50.
    """
    span = 2 * padding + 1
    tops = [seed % span for seed in seeds]
    lefts = [seed // span % span for seed in seeds]
    flips = [seed // (span * span) % 2 == 1 for seed in seeds]
    return tops, lefts, flips


def crop_and_flip(
    pixels: torch.Tensor,
    tops: Sequence[int],
    lefts: Sequence[int],
    flips: Sequence[bool],
    padding: int = CIFAR_PADDING,
) -> torch.Tensor:
    """Crop each of `pixels` (N, C, H, W) at its offsets after zero-padding by `padding`, then
    flip the chosen ones left-right; N x C x H x W out, same dtype and device."""
    count, _, height, width = pixels.shape
    if not len(tops) == len(lefts) == len(flips) == count:
        raise ValueError(
            f"need one top, left and flip per image ({count}), got "
            f"{len(tops)}, {len(lefts)} and {len(flips)}"
        )
    device = pixels.device
    padded = F.pad(pixels, (padding, padding, padding, padding))
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)  # N, C, 2p+1, 2p+1, H, W (a view)
    rows = torch.as_tensor(tops, device=device)
    cols = torch.as_tensor(lefts, device=device)
    cropped = windows[torch.arange(count, device=device), :, rows, cols]
    flip = torch.as_tensor(flips, dtype=torch.bool, device=device).view(-1, 1, 1, 1)
    return torch.where(flip, cropped.flip(-1), cropped)
