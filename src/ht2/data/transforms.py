"""Image transforms from a model's registry entry: CIFAR (native size) or ImageNet (resize+crop).

Every transform ends in `Normalise`, which takes uint8 pixels; evaluation splits the work into
`pixels` (deterministic, cacheable as uint8) and `normalise`, so cached and decoded data agree
bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

from ht2.models import ModelEntry

CIFAR_PADDING = 4


class Normalise:
    """uint8 CHW pixels to float, scaled to [0, 1] then standardised per channel.

    The same arithmetic as torchvision's ToTensor followed by Normalize(mean, std).
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """One image (C, H, W) or a batch (N, C, H, W), on the device of `mean` and `std`."""
        return pixels.to(torch.float32).div(255).sub_(self.mean).div_(self.std)

    def to(self, device: torch.device | str) -> Normalise:
        """The same normalisation with its constants on `device` (a batch there stays there)."""
        moved = copy.copy(self)
        moved.mean, moved.std = self.mean.to(device), self.std.to(device)
        return moved

    def __repr__(self) -> str:
        return f"Normalise(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


@dataclass(frozen=True)
class EvalTransform:
    """A deterministic PIL-to-tensor transform in two halves: `pixels` then `normalise`."""

    pixels: Callable[[Image.Image], torch.Tensor]
    normalise: Normalise
    params: dict[str, Any]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalise(self.pixels(image))


def is_cifar(entry: ModelEntry) -> bool:
    """True for models fed native-size CIFAR images (no resize or crop at evaluation)."""
    return entry.family.startswith("cifar")


def eval_transform(entry: ModelEntry) -> EvalTransform:
    """CIFAR: to tensor + normalise; ImageNet: resize, centre crop, to tensor + normalise."""
    _, height, width = entry.input_size
    normalise = Normalise(entry.mean, entry.std)
    if is_cifar(entry):
        params: dict[str, Any] = {"family": entry.family, "size": [height, width]}
        return EvalTransform(T.PILToTensor(), normalise, params)
    resize = entry.resize or 256
    params = {"family": entry.family, "resize": resize, "crop": [height, width]}
    pixels = T.Compose([T.Resize(resize), T.CenterCrop((height, width)), T.PILToTensor()])
    return EvalTransform(pixels, normalise, params)


def train_transform(entry: ModelEntry) -> T.Compose:
    """CIFAR: random crop with 4-pixel padding + flip; ImageNet: random resized crop + flip."""
    _, height, width = entry.input_size
    if is_cifar(entry):
        augment = [T.RandomCrop((height, width), padding=CIFAR_PADDING)]
    else:
        augment = [T.RandomResizedCrop((height, width))]
    return T.Compose(
        [
            *augment,
            T.RandomHorizontalFlip(),
            T.PILToTensor(),
            Normalise(entry.mean, entry.std),
        ]
    )
