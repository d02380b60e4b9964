"""The spectrum allocation: one threshold on normalised singular values, pooled across layers.

Each unfolding's squared singular values are divided by their sum, so every value is the
share of that unfolding's energy it carries; a rank is the number of shares above the
threshold (at least one). Layers thus compete for rank: a redundant layer, whose energy sits
in a few values, keeps few; a layer with a flat spectrum keeps many. The threshold is bisected
(on a log scale) until the whole model meets the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ht2.decomp import spatial_svd_unfoldings, squared_singular_values
from ht2.layers import effective_weight
from ht2.surgery.budget import AllocLayer, Budget, Ranks
from ht2.surgery.ranking import clip_ranks, has_unfoldings
from ht2.surgery.targets import TargetSolution, solve_energy

LOG_RANGE = 12.0  # thresholds from 1 (rank one everywhere) down to 1e-12 (nearly full rank)


def threshold_of(x: float) -> float:
    """The threshold that bisection variable `x` in (0, 1] stands for (x = 1: 1e-12)."""
    return 10.0 ** (-LOG_RANGE * x)


def shares(s2) -> np.ndarray:
    """Squared singular values as shares of their sum (largest first); zeros when all are zero."""
    values = np.asarray(s2, dtype=np.float64).clip(min=0)
    total = values.sum()
    return values / total if total > 0 else np.zeros_like(values)


@dataclass
class SpectrumLayer:
    """One layer's normalised spectra and its ranks at any threshold."""

    layer: AllocLayer
    spectra: dict[str, np.ndarray]

    @classmethod
    def of(cls, layer: AllocLayer) -> SpectrumLayer:
        if not has_unfoldings(layer.method):  # CP: the spatial-SVD matrix stands in for them
            matrix = spatial_svd_unfoldings(effective_weight(layer.module))["r"]
            return cls(layer, {"r": shares(squared_singular_values(matrix).cpu())})
        return cls(layer, {k: shares(s2) for k, s2 in layer.ranker.spectra.items()})

    def ranks_at(self, threshold: float) -> Ranks:
        """Shares above `threshold` per unfolding (CP: the energy those shares hold, by its fit)."""
        if not has_unfoldings(self.layer.method):
            share = self.spectra["r"]
            kept = share[share > threshold].sum() if (share > threshold).any() else share[0]
            return self.layer.ranker.at_energy(float(min(max(kept, 1e-6), 1.0)))
        ranks = {key: max(1, int((s > threshold).sum())) for key, s in self.spectra.items()}
        return clip_ranks(self.layer.method, ranks, self.layer.module.weight.shape)


def allocate_spectrum(budget: Budget) -> tuple[dict[str, Ranks], float, TargetSolution]:
    """(ranks per layer, threshold, solution) meeting `budget` with one pooled threshold."""
    layers = [SpectrumLayer.of(layer) for layer in budget.layers]

    def reduction_at(x: float) -> float:
        threshold = threshold_of(x)
        spent = sum(budget.cost(s.layer, s.ranks_at(threshold)) for s in layers)
        return budget.reduction(spent)

    solution = solve_energy(reduction_at, budget.target)
    threshold = threshold_of(solution.energy)
    ranks = {s.layer.name: s.ranks_at(threshold) for s in layers}
    return ranks, threshold, solution
