"""Per-layer rank choice: spectra computed once, then ranks at any energy, by VBMF or given."""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import nn

from ht2.decomp import (
    HT2Ranks,
    Tucker2Ranks,
    cp_fit_error,
    cp_max_rank,
    energy_rank,
    has_unfoldings,
    rank_unfoldings,
    squared_singular_values,
)
from ht2.decomp.ht2 import _clipped as _ht2_clipped
from ht2.decomp.tucker2 import _clipped as _tucker2_clipped

RANK_KEYS = {
    "ht2": ("r1", "r13", "r3"),
    "tucker2": ("r_in", "r_out"),
    "cp": ("r",),
    "spatial_svd": ("r",),
    "svd": ("r",),
}


def clip_ranks(method: str, ranks: dict[str, int], shape: torch.Size) -> dict[str, int]:
    """The ranks a decomposition of a weight of `shape` really uses (no larger than it allows)."""
    if method == "ht2":
        return _ht2_clipped(HT2Ranks(ranks["r1"], ranks["r13"], ranks["r3"]), shape).as_dict()
    if method == "tucker2":
        clipped = _tucker2_clipped(Tucker2Ranks(ranks["r_in"], ranks["r_out"]), shape)
        return clipped.as_dict()
    r = max(1, int(ranks["r"]))
    if method == "svd":
        rows = shape[0]
        cols = math.prod(shape[1:])
        return {"r": min(r, rows, cols)}
    if method == "spatial_svd":
        t, c, d1, d2 = shape
        return {"r": min(r, c * d1, t * d2)}
    return {"r": r}


def rank_limits(method: str, shape: torch.Size) -> dict[str, int]:
    """The largest rank each key may take for a weight of `shape` (CP: its break-even rank)."""
    if method == "cp":
        return {"r": cp_max_rank(shape)}
    huge = {key: 1 << 40 for key in RANK_KEYS[method]}
    return clip_ranks(method, huge, shape)


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
        self.weight = weight.detach()
        self.shape = weight.shape
        self.spectra: dict[str, torch.Tensor] = {}
        self.matrix_shapes: dict[str, tuple[int, int]] = {}
        if has_unfoldings(method):
            for key, matrix in rank_unfoldings(method, self.weight).items():
                self.spectra[key] = squared_singular_values(matrix).cpu()
                self.matrix_shapes[key] = (matrix.shape[0], matrix.shape[1])
        self._cp_error = cache(self._cp_fit_error)

    def _cp_fit_error(self, rank: int) -> float:
        return cp_fit_error(self.weight, rank)

    def at_energy(self, energy: float) -> dict[str, int]:
        """The energy rule on each unfolding (CP: the smallest rank whose fit keeps `energy`)."""
        if self.method == "cp":
            return {"r": self._cp_rank(energy)}
        ranks = {key: energy_rank(s2, energy) for key, s2 in self.spectra.items()}
        return clip_ranks(self.method, ranks, self.shape)

    def _cp_rank(self, energy: float) -> int:
        budget = 1.0 - energy
        low, high = 1, cp_max_rank(self.shape)
        if self._cp_error(high) ** 2 > budget:
            return high
        while low < high:
            middle = (low + high) // 2
            if self._cp_error(middle) ** 2 <= budget:
                high = middle
            else:
                low = middle + 1
        return high

    def by_vbmf(self) -> dict[str, int]:
        """EVBMF's rank on each unfolding (not defined for CP)."""
        from ht2.decomp.vbmf import evbmf_rank

        if self.method == "cp":
            raise ValueError("the VBMF rank rule needs unfoldings; CP has none (use energy)")
        ranks = {key: evbmf_rank(s2, self.matrix_shapes[key]) for key, s2 in self.spectra.items()}
        return clip_ranks(self.method, ranks, self.shape)


def weight_of(module: nn.Module) -> torch.Tensor:
    """The dense weight a ranker reads."""
    return module.weight
