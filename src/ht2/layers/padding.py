"""TensorFlow-style dynamic 'same' padding: worked out from each input's size, as timm's
Conv2dSame does, so a strided conv covers its input the same way at any resolution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Pair = tuple[int, int]


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding of one axis: enough for ceil(size / stride) outputs, the odd
    pixel after (TensorFlow's 'SAME')."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel_size: Pair, stride: Pair, dilation: Pair) -> torch.Tensor:
    """`x` (N, C, H, W) zero-padded for a conv of that geometry to give ceil(H/s) x ceil(W/s)."""
    top, bottom = same_padding(x.shape[-2], kernel_size[0], stride[0], dilation[0])
    left, right = same_padding(x.shape[-1], kernel_size[1], stride[1], dilation[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom))


class SamePadConv2d(nn.Conv2d):
    """A Conv2d (no padding of its own) that first pads its input by `pad_same`: the plain
    layer that a dynamic 'same' conv, such as timm's Conv2dSame, is equivalent to."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Pair,
        stride: int | Pair = 1,
        dilation: int | Pair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self.kernel_size, self.stride, self.dilation))
