"""The energy rank rule of the paper: keep the fewest singular values that hold more than e."""

from __future__ import annotations

import torch


def check_energy(energy: float) -> float:
    """Return `energy` as a float if it lies in (0, 1], else raise ValueError saying so."""
    value = float(energy)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    return value


def energy_rank(squared_singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r with (s_1^2 + ... + s_r^2) / sum s_i^2 strictly above `energy`.

    `squared_singular_values` must be sorted in decreasing order. Energy 1 keeps every value
    (the strict rule can never be met exactly there); an all-zero spectrum keeps one.
    """
    energy = check_energy(energy)
    s2 = squared_singular_values.detach().to(torch.float64).clamp_min(0)
    n = s2.numel()
    if n == 0:
        raise ValueError("cannot choose a rank from an empty spectrum")
    if energy == 1.0:
        return n
    total = s2.sum()
    if total <= 0:
        return 1
    fraction = torch.cumsum(s2, 0) / total
    kept = int((fraction <= energy).sum().item()) + 1
    return min(kept, n)
