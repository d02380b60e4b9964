"""Truncated SVD of a matrix and Tucker-1 of a kernel on its out-channel mode."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ht2.decomp.basis import normalized, spectrum, times_power_of_two, working_dtype
from ht2.decomp.threads import sized_by_first


@dataclass(frozen=True)
class LowRankFactors:
    """W (m x n) ~= second @ first, with first of shape (r, n) and second of shape (m, r)."""

    first: torch.Tensor
    second: torch.Tensor
    rank: int
    rel_error: float


def _check_choice(energy: float | None, rank: int | None) -> None:
    if (energy is None) == (rank is None):
        raise ValueError("give exactly one of energy or rank")
    if rank is not None and rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")


@sized_by_first
def truncated_svd(
    matrix: torch.Tensor, energy: float | None = None, rank: int | None = None
) -> LowRankFactors:
    """Best rank-r approximation of `matrix` as two factors, r from `energy` or given.

    The factors are orthogonal projections of the matrix itself (U_r^T W and U_r, or V_r and
    W V_r), so no singular value is ever divided by. Float32 weights are decomposed in float32
    (ranks still by the exact rule, see `spectrum`), divided by a power of two near their
    largest entry that the projected factor takes back. Returned in the matrix's dtype.
    """
    _check_choice(energy, rank)
    m, n = matrix.shape
    a, exponent = normalized(matrix.detach().to(working_dtype(matrix)))
    wide = m <= n
    found = spectrum(a if wide else a.T, energy=energy)
    r = min(found.rank if rank is None else rank, min(m, n))
    kept = found.vectors[:, :r]
    if wide:
        first, second = times_power_of_two(kept.T @ a, exponent), kept
    else:
        first, second = kept.T, times_power_of_two(a @ kept, exponent)
    s2 = found.s2
    total = s2.sum()
    rel_error = float((s2[r:].sum() / total).sqrt()) if total > 0 else 0.0
    dtype = matrix.dtype
    return LowRankFactors(first.to(dtype), second.to(dtype), r, rel_error)


def tucker1(
    kernel: torch.Tensor, energy: float | None = None, rank: int | None = None
) -> LowRankFactors:
    """Tucker-1 of a T x C x D1 x D2 kernel on its out-channel mode (the paper's "SVD" of a conv).

    `first` has shape (r, C, D1, D2): a conv C -> r with the original geometry;
    `second` has shape (T, r): the 1 x 1 conv r -> T.
    """
    t = kernel.shape[0]
    factors = truncated_svd(kernel.reshape(t, -1), energy=energy, rank=rank)
    first = factors.first.reshape(factors.rank, *kernel.shape[1:])
    return LowRankFactors(first, factors.second, factors.rank, factors.rel_error)


def spatial_svd(
    kernel: torch.Tensor, energy: float | None = None, rank: int | None = None
) -> LowRankFactors:
    """Spatial SVD of a T x C x D1 x D2 kernel: the (C D1) x (T D2) matrix truncated at rank r.

    `first` has shape (r, C, D1, 1): the D1 x 1 conv C -> r;
    `second` has shape (T, r, 1, D2): the 1 x D2 conv r -> T.
    """
    if kernel.dim() != 4:
        raise ValueError(f"spatial SVD needs a 4-D kernel, got shape {tuple(kernel.shape)}")
    t, c, d1, d2 = kernel.shape
    matrix = kernel.permute(1, 2, 0, 3).reshape(c * d1, t * d2)
    factors = truncated_svd(matrix, energy=energy, rank=rank)
    r = factors.rank
    vertical = factors.second.reshape(c, d1, r).permute(2, 0, 1)[..., None]
    horizontal = factors.first.reshape(r, t, d2).permute(1, 0, 2)[:, :, None, :]
    return LowRankFactors(
        vertical.contiguous(), horizontal.contiguous(), factors.rank, factors.rel_error
    )
