"""What a Conv2d or Linear multiplies its weight with: input patches as columns of a matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}


def _explicit_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding of `conv`, resolving 'same' and 'valid'."""
    if conv.padding == "valid":
        return (0, 0, 0, 0)
    if conv.padding == "same":
        sides = []
        for axis in (1, 0):  # F.pad lists the last dimension (width) first
            total = conv.dilation[axis] * (conv.kernel_size[axis] - 1)
            sides += [total // 2, total - total // 2]
        return tuple(sides)
    ph, pw = conv.padding
    return (pw, pw, ph, ph)


def conv_patches(conv: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """The (C*kh*kw) x (N*L) matrix whose product with weight.reshape(T, -1) is the output.

    Rows are ordered as the flattened weight (channel, kernel row, kernel column); every
    padding mode and 'same'/'valid' are applied the way the conv applies them.
    """
    pad = _explicit_padding(conv)
    if any(pad):
        mode = _PAD_MODES.get(conv.padding_mode, conv.padding_mode)
        inputs = F.pad(inputs, pad, mode=mode)
    cols = F.unfold(inputs, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)
    return cols.permute(1, 0, 2).reshape(cols.shape[1], -1)


def layer_patches(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Input columns of a dense Conv2d (patches) or Linear (feature vectors): fan-in x samples."""
    if isinstance(layer, nn.Conv2d):
        return conv_patches(layer, inputs)
    return inputs.reshape(-1, inputs.shape[-1]).T


def output_columns(layer: nn.Module, outputs: torch.Tensor) -> torch.Tensor:
    """A layer's output as out-channels x samples, in the order of `layer_patches`' columns."""
    if isinstance(layer, nn.Conv2d):
        return outputs.transpose(0, 1).reshape(outputs.shape[1], -1)
    return outputs.reshape(-1, outputs.shape[-1]).T


def flat_weight(layer: nn.Module) -> torch.Tensor:
    """The weight as out-channels x fan-in (the matrix that multiplies `layer_patches`)."""
    return layer.weight.reshape(layer.weight.shape[0], -1)
