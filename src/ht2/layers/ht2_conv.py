"""HT-2 convolution: 1x1 (C->R1), D1x1 (R1->R13), 1xD2 (R13->R3), 1x1 (R3->T)."""

from __future__ import annotations

import torch
from torch import nn

from ht2.decomp import HT2Ranks, ht2_decompose
from ht2.layers.base import FactorizedLayer
from ht2.layers.spec import ConvSpec


class HT2Conv2d(FactorizedLayer):
    """The four convolutions of the hierarchical Tucker-2 decomposition of one conv.

    Stride, dilation and padding of each spatial axis go to the conv that spans that axis;
    padding modes act per axis, so they stay exact too.
    """

    method = "ht2"

    def __init__(self, spec: ConvSpec, ranks: HT2Ranks, energy: float | None = None):
        if spec.groups != 1:
            raise ValueError(f"HT-2 needs groups=1, got groups={spec.groups}")
        super().__init__(spec, ranks.as_dict(), energy)
        (d1, d2), (s1, s2), (l1, l2) = spec.kernel_size, spec.stride, spec.dilation
        self.reduce = nn.Conv2d(spec.in_channels, ranks.r1, 1, bias=False)
        self.vertical = nn.Conv2d(
            ranks.r1,
            ranks.r13,
            (d1, 1),
            stride=(s1, 1),
            padding=spec.padding_along(0),
            dilation=(l1, 1),
            bias=False,
            padding_mode=spec.padding_mode,
        )
        self.horizontal = nn.Conv2d(
            ranks.r13,
            ranks.r3,
            (1, d2),
            stride=(1, s2),
            padding=spec.padding_along(1),
            dilation=(1, l2),
            bias=False,
            padding_mode=spec.padding_mode,
        )
        self.expand = nn.Conv2d(ranks.r3, spec.out_channels, 1, bias=spec.bias)

    @classmethod
    def from_dense(
        cls, conv: nn.Conv2d, energy: float | None = None, ranks: HT2Ranks | None = None
    ) -> HT2Conv2d:
        """Decompose `conv` (ranks from `energy`, or given) and copy the factors in."""
        factors = ht2_decompose(conv.weight, energy=energy, ranks=ranks)
        layer = cls(ConvSpec.of(conv), factors.ranks, energy)
        layer.rel_error = factors.rel_error
        with torch.no_grad():
            layer.reduce.weight.copy_(factors.u1.T[:, :, None, None])
            layer.vertical.weight.copy_(factors.g1.permute(2, 0, 1)[..., None])
            layer.horizontal.weight.copy_(factors.g2.permute(1, 0, 2)[:, :, None, :])
            layer.expand.weight.copy_(factors.u3[:, :, None, None])
            if conv.bias is not None:
                layer.expand.bias.copy_(conv.bias)
        return layer.to(conv.weight.device)

    def dense_weight(self) -> torch.Tensor:
        u1 = self.reduce.weight[:, :, 0, 0]
        g1 = self.vertical.weight[..., 0]
        g2 = self.horizontal.weight[:, :, 0, :]
        u3 = self.expand.weight[:, :, 0, 0]
        left = torch.einsum("ac,kah->chk", u1, g1)
        right = torch.einsum("bkw,tb->ktw", g2, u3)
        return torch.einsum("chk,ktw->tchw", left, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.horizontal(self.vertical(self.reduce(x))))
