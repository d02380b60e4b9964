"""Per-layer rank choice: spectra computed once, then ranks at any energy, by VBMF or given."""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from ht2.decomp import energy_rank, squared_singular_values
from ht2.layers.registry import method_names, method_spec


def rank_keys(method: str) -> tuple[str, ...]:
    """The names of `method`'s ranks (ht2: r1, r13, r3; tucker2: r_in, r_out; others: r)."""
    return method_spec(method).rank_keys


def has_unfoldings(method: str) -> bool:
    """Whether `method`'s ranks come from singular values of unfoldings (not from a fit error)."""
    return method in method_names() and method_spec(method).unfoldings is not None


def clip_ranks(method: str, ranks: dict[str, int], shape: torch.Size) -> dict[str, int]:
    """The ranks a decomposition of a weight of `shape` really uses (no larger than it allows)."""
    return method_spec(method).clip(ranks, shape)


def rank_limits(method: str, shape: torch.Size) -> dict[str, int]:
    """The largest rank each key may take for a weight of `shape` (CP: its break-even rank)."""
    facts = method_spec(method)
    if facts.unfoldings is None:
        return {"r": facts.max_rank(shape)}
    huge = {key: 1 << 40 for key in facts.rank_keys}
    return facts.clip(huge, shape)


def round_up(
    method: str, ranks: dict[str, int], multiple: int, shape: torch.Size
) -> dict[str, int]:
    """Every rank rounded up to a multiple of `multiple`, then clipped to what the layer allows."""
    if multiple <= 1:
        return dict(ranks)
    rounded = {key: -(-value // multiple) * multiple for key, value in ranks.items()}
    return clip_ranks(method, rounded, shape)


class LayerRanker:
    """Ranks of one layer under one method, from spectra (or CP fit errors) computed once."""

    def __init__(self, method: str, weight: torch.Tensor):
        self.method = method
        self.facts = method_spec(method)
        self.weight = weight.detach()
        self.shape = weight.shape
        self.spectra: dict[str, torch.Tensor] = {}
        self.matrix_shapes: dict[str, tuple[int, int]] = {}
        if self.facts.unfoldings is not None:
            for key, matrix in self.facts.unfoldings(self.weight).items():
                self.spectra[key] = squared_singular_values(matrix).cpu()
                self.matrix_shapes[key] = (matrix.shape[0], matrix.shape[1])
        self._fit_error = cache(self._fit_error_at)

    def _fit_error_at(self, rank: int) -> float:
        return self.facts.fit_error(self.weight, rank)

    def at_energy(self, energy: float) -> dict[str, int]:
        """The energy rule on each unfolding (CP: the smallest rank whose fit keeps `energy`)."""
        if self.facts.unfoldings is None:
            return {"r": self._fit_rank(energy)}
        ranks = {key: energy_rank(s2, energy) for key, s2 in self.spectra.items()}
        return self.facts.clip(ranks, self.shape)

    def _fit_rank(self, energy: float) -> int:
        budget = 1.0 - energy
        low, high = 1, self.facts.max_rank(self.shape)
        if self._fit_error(high) ** 2 > budget:
            return high
        while low < high:
            middle = (low + high) // 2
            if self._fit_error(middle) ** 2 <= budget:
                high = middle
            else:
                low = middle + 1
        return high

    def by_vbmf(self) -> dict[str, int]:
        """EVBMF's rank on each unfolding (not defined for CP)."""
        from ht2.decomp.vbmf import evbmf_rank

        if self.facts.unfoldings is None:
            raise ValueError(
                f"the VBMF rank rule needs unfoldings; {self.facts.title} has none (use energy)"
            )
        ranks = {key: evbmf_rank(s2, self.matrix_shapes[key]) for key, s2 in self.spectra.items()}
        return self.facts.clip(ranks, self.shape)


def weight_of(module: nn.Module) -> torch.Tensor:
    """The dense weight a ranker reads."""
    return module.weight
