"""SVD (Tucker-1) convolution: D1xD2 (C->R) with the original geometry, then 1x1 (R->T)."""

from __future__ import annotations

import torch
from torch import nn

from ht2.decomp import tucker1
from ht2.layers.base import FactorizedLayer
from ht2.layers.factor_convs import factor_conv
from ht2.layers.spec import ConvSpec


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
