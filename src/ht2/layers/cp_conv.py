"""CP convolution: 1x1 (C->R), D1x1 depthwise, 1xD2 depthwise, 1x1 (R->T)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ht2.decomp import cp_decompose, cp_fit_error, cp_max_rank
from ht2.layers.base import FactorizedLayer
from ht2.layers.factor_convs import factor_conv
from ht2.layers.registry import MethodSpec
from ht2.layers.spec import ConvSpec


class CPConv2d(FactorizedLayer):
    """The four convolutions of the rank-R CP decomposition of one conv (Lebedev et al. 2015).

    The two spatial convs are depthwise (groups=R); stride, dilation and padding of each axis
    go to the conv that spans that axis, padding modes act per axis.
    """

    method = "cp"

    def __init__(self, spec: ConvSpec, rank: int, energy: float | None = None):
        if spec.groups != 1:
            raise ValueError(f"CP needs groups=1, got groups={spec.groups}")
        super().__init__(spec, {"r": rank}, energy)
        self.reduce = factor_conv(spec, spec.in_channels, rank, "none")
        self.vertical = factor_conv(spec, rank, rank, "height", groups=rank)
        self.horizontal = factor_conv(spec, rank, rank, "width", groups=rank)
        self.expand = factor_conv(spec, rank, spec.out_channels, "none", bias=spec.bias)

    @classmethod
    def from_dense(
        cls, conv: nn.Conv2d, energy: float | None = None, rank: int | None = None
    ) -> CPConv2d:
        """Decompose `conv` (rank from `energy`, or given) and copy the factors in."""
        factors = cp_decompose(conv.weight, energy=energy, rank=rank)
        layer = cls(ConvSpec.of(conv), factors.rank, energy)
        layer.rel_error = factors.rel_error
        with torch.no_grad():
            layer.reduce.weight.copy_(factors.u_in.T[:, :, None, None])
            layer.vertical.weight.copy_(factors.vertical.T[:, None, :, None])
            layer.horizontal.weight.copy_(factors.horizontal.T[:, None, None, :])
            layer.expand.weight.copy_(factors.u_out[:, :, None, None])
        return layer.adopt_bias_and_device(conv)

    def dense_weight(self) -> torch.Tensor:
        return torch.einsum(
            "tr,rc,rh,rw->tchw",
            self.expand.weight[:, :, 0, 0],
            self.reduce.weight[:, :, 0, 0],
            self.vertical.weight[:, 0, :, 0],
            self.horizontal.weight[:, 0, 0, :],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad_input(x)
        return self.expand(self.horizontal(self.vertical(self.reduce(x))))


def _clip(ranks: Mapping[str, int], shape: Sequence[int]) -> dict[str, int]:
    return {"r": max(1, int(ranks["r"]))}


def _bounds(spec: ConvSpec, ranks: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    """r <= T C D1 D2 / max(T, C, D1, D2): any tensor is the sum of that many rank-1 terms (one
    per fibre of its longest mode), so a larger rank is never needed; the layer then holds at
    most 4 times the dense layer's weights."""
    sizes = (spec.out_channels, spec.in_channels, *spec.kernel_size)
    bound = math.prod(sizes) // max(sizes)
    return {"r": (bound, "no tensor of this shape has a larger CP rank")}


METHOD = MethodSpec(
    title="CP",
    layers={"Conv2d": CPConv2d},
    rank_keys=("r",),
    clip=_clip,
    bounds=_bounds,
    fit_error=cp_fit_error,
    max_rank=cp_max_rank,
)
