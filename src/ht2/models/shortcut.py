"""The parameter-free "option A" shortcut of the CIFAR ResNets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ShortcutA(nn.Module):
    """Halve the resolution by subsampling and zero-pad the channels (planes // 4 on each side)."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Subsample x[:, :, ::2, ::2] and pad the channel dimension with zeros."""
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}"
