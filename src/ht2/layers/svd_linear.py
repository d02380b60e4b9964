"""SVD linear layer: Linear(in -> R, no bias) then Linear(R -> out, original bias)."""

from __future__ import annotations

import torch
from torch import nn

from ht2.decomp import truncated_svd
from ht2.layers.base import FactorizedLayer
from ht2.layers.spec import LinearSpec


class SVDLinear(FactorizedLayer):
    """A Linear layer as the product of two thin ones (truncated SVD of its weight)."""

    method = "svd"

    def __init__(self, spec: LinearSpec, rank: int, energy: float | None = None):
        super().__init__(spec, {"r": rank}, energy)
        self.reduce = nn.Linear(spec.in_features, rank, bias=False)
        self.expand = nn.Linear(rank, spec.out_features, bias=spec.bias)

    @classmethod
    def from_dense(
        cls, linear: nn.Linear, energy: float | None = None, rank: int | None = None
    ) -> SVDLinear:
        """Decompose `linear` (rank from `energy`, or given) and copy the factors in."""
        factors = truncated_svd(linear.weight, energy=energy, rank=rank)
        layer = cls(LinearSpec.of(linear), factors.rank, energy)
        layer.rel_error = factors.rel_error
        with torch.no_grad():
            layer.reduce.weight.copy_(factors.first)
            layer.expand.weight.copy_(factors.second)
        return layer.adopt_bias_and_device(linear)

    def dense_weight(self) -> torch.Tensor:
        return self.expand.weight @ self.reduce.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.reduce(x))
