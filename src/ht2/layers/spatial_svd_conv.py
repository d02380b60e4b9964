"""Spatial SVD convolution: D1x1 (C->R), then 1xD2 (R->T) carrying the bias."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ht2.decomp import spatial_svd, spatial_svd_unfoldings
from ht2.layers.base import FactorizedLayer
from ht2.layers.factor_convs import factor_conv
from ht2.layers.registry import MethodSpec
from ht2.layers.spec import ConvSpec


class SpatialSVDConv2d(FactorizedLayer):
    """A conv split into a vertical and a horizontal one (truncated SVD of the (C D1) x (T D2)
    matrix of its kernel, as AIMET's spatial SVD).

    Stride, dilation and padding of each spatial axis go to the conv that spans that axis;
    padding modes act per axis, so they stay exact too.
    """

    method = "spatial_svd"

    def __init__(self, spec: ConvSpec, rank: int, energy: float | None = None):
        if spec.groups != 1:
            raise ValueError(f"spatial SVD needs groups=1, got groups={spec.groups}")
        super().__init__(spec, {"r": rank}, energy)
        self.vertical = factor_conv(spec, spec.in_channels, rank, "height")
        self.expand = factor_conv(spec, rank, spec.out_channels, "width", bias=spec.bias)

    @classmethod
    def from_dense(
        cls, conv: nn.Conv2d, energy: float | None = None, rank: int | None = None
    ) -> SpatialSVDConv2d:
        """Decompose `conv` (rank from `energy`, or given) and copy the factors in."""
        factors = spatial_svd(conv.weight, energy=energy, rank=rank)
        layer = cls(ConvSpec.of(conv), factors.rank, energy)
        layer.rel_error = factors.rel_error
        with torch.no_grad():
            layer.vertical.weight.copy_(factors.first)
            layer.expand.weight.copy_(factors.second)
        return layer.adopt_bias_and_device(conv)

    def dense_weight(self) -> torch.Tensor:
        return torch.einsum(
            "trw,rch->tchw", self.expand.weight[:, :, 0, :], self.vertical.weight[..., 0]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.vertical(self.pad_input(x)))


def _clip(ranks: Mapping[str, int], shape: Sequence[int]) -> dict[str, int]:
    t, c, d1, d2 = shape
    return {"r": min(max(1, int(ranks["r"])), c * d1, t * d2)}


def _bounds(spec: ConvSpec, ranks: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    """r <= min(C D1, T D2)."""
    t, c = spec.out_channels, spec.in_channels
    d1, d2 = spec.kernel_size
    return {"r": (min(c * d1, t * d2), f"min(C D1, T D2) with C={c}, T={t}, D={d1}x{d2}")}


METHOD = MethodSpec(
    title="spatial SVD",
    layers={"Conv2d": SpatialSVDConv2d},
    rank_keys=("r",),
    clip=_clip,
    bounds=_bounds,
    unfoldings=spatial_svd_unfoldings,
)
