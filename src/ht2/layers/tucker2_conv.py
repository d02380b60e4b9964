"""Tucker-2 convolution: 1x1 (C->R_in), D1xD2 (R_in->R_out) core, 1x1 (R_out->T)."""

from __future__ import annotations

import torch
from torch import nn

from ht2.decomp import Tucker2Ranks, tucker2_decompose
from ht2.layers.base import FactorizedLayer
from ht2.layers.factor_convs import factor_conv
from ht2.layers.spec import ConvSpec


class Tucker2Conv2d(FactorizedLayer):
    """The three convolutions of the Tucker-2 decomposition of one conv (Kim et al. 2016).

    The core conv keeps the original stride, padding, dilation and padding mode; the 1x1
    convs around it only mix channels.
    """

    method = "tucker2"
    default_form = "three"  # or "dense" (see FactorizedLayer.in_form)

    def __init__(self, spec: ConvSpec, ranks: Tucker2Ranks, energy: float | None = None):
        if spec.groups != 1:
            raise ValueError(f"Tucker-2 needs groups=1, got groups={spec.groups}")
        super().__init__(spec, ranks.as_dict(), energy)
        self.reduce = factor_conv(spec, spec.in_channels, ranks.r_in, "none")
        self.core = factor_conv(spec, ranks.r_in, ranks.r_out, "both")
        self.expand = factor_conv(spec, ranks.r_out, spec.out_channels, "none", bias=spec.bias)

    @classmethod
    def from_dense(
        cls,
        conv: nn.Conv2d,
        energy: float | None = None,
        ranks: Tucker2Ranks | None = None,
        sweeps: int = 0,
    ) -> Tucker2Conv2d:
        """Decompose `conv` (ranks from `energy`, or given; `sweeps` HOOI rounds after the
        HOSVD) and copy the factors in."""
        factors = tucker2_decompose(conv.weight, energy=energy, ranks=ranks, hooi_sweeps=sweeps)
        layer = cls(ConvSpec.of(conv), factors.ranks, energy)
        layer.rel_error = factors.rel_error
        with torch.no_grad():
            layer.reduce.weight.copy_(factors.u_in.T[:, :, None, None])
            layer.core.weight.copy_(factors.core)
            layer.expand.weight.copy_(factors.u_out[:, :, None, None])
        return layer.adopt_bias_and_device(conv)

    def dense_weight(self) -> torch.Tensor:
        u_in = self.reduce.weight[:, :, 0, 0]
        u_out = self.expand.weight[:, :, 0, 0]
        return torch.einsum("to,oihw,ic->tchw", u_out, self.core.weight, u_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.core(self.reduce(self.pad_input(x))))
