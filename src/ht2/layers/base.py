"""What every factorized module shares: its spec, its ranks, its plan entry."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ht2.layers.spec import ConvSpec, LinearSpec


class FactorizedLayer(nn.Module):
    """A chain of small layers standing in for one dense layer.

    Subclasses set `method`, build their children in __init__ from (spec, ranks) alone, so a
    saved plan can rebuild them without any decomposition, and end with a child named `expand`
    that carries the original bias.
    """

    method: str = ""

    def __init__(self, spec: ConvSpec | LinearSpec, ranks: dict[str, int], energy: float | None):
        super().__init__()
        self.spec = spec
        self.ranks = dict(ranks)
        self.energy = energy
        self.rel_error: float | None = None

    def plan_entry(self) -> dict[str, Any]:
        """What a plan needs to rebuild this module's structure (not its weights)."""
        return {
            "method": self.method,
            "ranks": dict(self.ranks),
            "energy": self.energy,
            "layer": self.spec.to_dict(),
        }

    def dense_weight(self) -> torch.Tensor:
        """The dense weight this chain computes (same shape as the original layer's)."""
        raise NotImplementedError

    def to_dense(self) -> nn.Module:
        """A dense layer equal to this chain (up to float rounding)."""
        dense = self.spec.build()
        with torch.no_grad():
            dense.weight.copy_(self.dense_weight())
            if self.spec.bias:
                dense.bias.copy_(self.expand.bias)
        return dense.to(self.expand.weight.device)

    def extra_repr(self) -> str:
        ranks = ", ".join(f"{k}={v}" for k, v in self.ranks.items())
        return f"method={self.method}, {ranks}"
