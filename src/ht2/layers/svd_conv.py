"""SVD (Tucker-1) convolution: D1xD2 (C->R) with the original geometry, then 1x1 (R->T).

The method "svd" is this layer for convs and SVDLinear for Linear layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ht2.decomp import svd_unfoldings, tucker1
from ht2.layers.base import FactorizedLayer
from ht2.layers.factor_convs import factor_conv
from ht2.layers.registry import MethodSpec
from ht2.layers.spec import ConvSpec, LinearSpec
from ht2.layers.svd_linear import SVDLinear


class SVDConv2d(FactorizedLayer):
    """A conv factorized on its out-channel mode: the paper's treatment of first and 1x1 convs."""

    method = "svd"

    def __init__(self, spec: ConvSpec, rank: int, energy: float | None = None):
        if spec.groups != 1:
            raise ValueError(f"SVD conv needs groups=1, got groups={spec.groups}")
        super().__init__(spec, {"r": rank}, energy)
        self.reduce = factor_conv(spec, spec.in_channels, rank, "both")
        self.expand = factor_conv(spec, rank, spec.out_channels, "none", bias=spec.bias)

    @classmethod
    def from_dense(
        cls, conv: nn.Conv2d, energy: float | None = None, rank: int | None = None
    ) -> SVDConv2d:
        """Decompose `conv` (rank from `energy`, or given) and copy the factors in."""
        factors = tucker1(conv.weight, energy=energy, rank=rank)
        layer = cls(ConvSpec.of(conv), factors.rank, energy)
        layer.rel_error = factors.rel_error
        with torch.no_grad():
            layer.reduce.weight.copy_(factors.first)
            layer.expand.weight.copy_(factors.second[:, :, None, None])
        return layer.adopt_bias_and_device(conv)

    def dense_weight(self) -> torch.Tensor:
        return torch.einsum("tr,rchw->tchw", self.expand.weight[:, :, 0, 0], self.reduce.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.reduce(self.pad_input(x)))


def _clip(ranks: Mapping[str, int], shape: Sequence[int]) -> dict[str, int]:
    return {"r": min(max(1, int(ranks["r"])), shape[0], math.prod(shape[1:]))}


def _bounds(spec: ConvSpec | LinearSpec, ranks: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    """Linear: r <= min(in_features, out_features); conv: r <= min(T, C D1 D2)."""
    if isinstance(spec, LinearSpec):
        n_in, n_out = spec.in_features, spec.out_features
        return {"r": (min(n_in, n_out), f"min(in_features {n_in}, out_features {n_out})")}
    t, c = spec.out_channels, spec.in_channels
    d1, d2 = spec.kernel_size
    return {"r": (min(t, c * d1 * d2), f"min(T, C D1 D2) with C={c}, T={t}, D={d1}x{d2}")}


METHOD = MethodSpec(
    title="SVD",
    layers={"Conv2d": SVDConv2d, "Linear": SVDLinear},
    rank_keys=("r",),
    clip=_clip,
    bounds=_bounds,
    unfoldings=svd_unfoldings,
)
