"""Tucker-2 convolution: 1x1 (C->R_in), D1xD2 (R_in->R_out) core, 1x1 (R_out->T)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ht2.decomp import (
    Tucker2Ranks,
    tucker2_clipped_ranks,
    tucker2_decompose,
    tucker2_unfoldings,
)
from ht2.layers.base import FactorizedLayer
from ht2.layers.factor_convs import factor_conv
from ht2.layers.registry import MethodSpec
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


def _typed_ranks(ranks: Mapping[str, int]) -> dict[str, Any]:
    return {"ranks": Tucker2Ranks(int(ranks["r_in"]), int(ranks["r_out"]))}


def _clip(ranks: Mapping[str, int], shape: Sequence[int]) -> dict[str, int]:
    return tucker2_clipped_ranks(Tucker2Ranks(ranks["r_in"], ranks["r_out"]), shape).as_dict()


def _bounds(spec: ConvSpec, ranks: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    """r_in <= min(C, T D1 D2, r_out D1 D2), r_out <= min(T, C D1 D2, r_in D1 D2)."""
    t, c = spec.out_channels, spec.in_channels
    d1, d2 = spec.kernel_size
    r_in, r_out, k = ranks["r_in"], ranks["r_out"], d1 * d2
    return {
        "r_in": (min(c, t * k, r_out * k), f"min(C, T D1 D2, r_out D1 D2), C={c}, T={t}"),
        "r_out": (min(t, c * k, r_in * k), f"min(T, C D1 D2, r_in D1 D2), C={c}, T={t}"),
    }


METHOD = MethodSpec(
    title="Tucker-2",
    layers={"Conv2d": Tucker2Conv2d},
    rank_keys=("r_in", "r_out"),
    clip=_clip,
    bounds=_bounds,
    typed_ranks=_typed_ranks,
    unfoldings=tucker2_unfoldings,
    refinable=True,
)
