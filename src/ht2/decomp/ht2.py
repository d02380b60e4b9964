"""Hierarchical Tucker-2 (HT-2) of a 4-D convolution kernel, as in Gabor & Zdunek (2023)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ht2.decomp.basis import normalized, spectrum, times_power_of_two, working_dtype
from ht2.decomp.threads import sized_by_first

_DIRECT_ERROR_BELOW = 0.05  # relative errors under this are measured on the rebuilt kernel


@dataclass(frozen=True)
class HT2Ranks:
    """The three HT-2 ranks: input channels (r1), the inner split (r13), output channels (r3)."""

    r1: int
    r13: int
    r3: int

    def as_dict(self) -> dict[str, int]:
        return {"r1": self.r1, "r13": self.r13, "r3": self.r3}


@dataclass(frozen=True)
class HT2Factors:
    """W[t, c, h, w] ~= sum U1[c, a] G1[a, h, k] G2[k, b, w] U3[t, b]."""

    u1: torch.Tensor  # C x R1
    g1: torch.Tensor  # R1 x D1 x R13
    g2: torch.Tensor  # R13 x R3 x D2
    u3: torch.Tensor  # T x R3
    ranks: HT2Ranks
    rel_error: float


def _permuted(kernel: torch.Tensor) -> torch.Tensor:
    """X of the paper: the kernel T x C x D1 x D2 arranged as C x D1 x T x D2."""
    return kernel.permute(1, 2, 0, 3)


@sized_by_first
def ht2_ranks(kernel: torch.Tensor, energy: float) -> HT2Ranks:
    """The energy ranks (R1, R13, R3) of a kernel, each from one matricization of X."""
    x = _permuted(kernel.detach().to(working_dtype(kernel)))
    c, d1, t, d2 = x.shape
    return HT2Ranks(
        spectrum(x.reshape(c, -1), energy, vectors=False).rank,
        spectrum(x.reshape(c * d1, t * d2), energy, vectors=False).rank,
        spectrum(x.permute(2, 0, 1, 3).reshape(t, -1), energy, vectors=False).rank,
    )


def ht2_clipped_ranks(ranks: HT2Ranks, shape: Sequence[int]) -> HT2Ranks:
    """The ranks an HT-2 of a kernel of `shape` uses: no larger than the matrices they truncate
    allow."""
    t, c, d1, d2 = shape
    r1 = max(1, min(ranks.r1, c, d1 * t * d2))
    r3 = max(1, min(ranks.r3, t, c * d1 * d2))
    r13 = max(1, min(ranks.r13, r1 * d1, r3 * d2))
    return HT2Ranks(r1, r13, r3)


@sized_by_first
def ht2_decompose(
    kernel: torch.Tensor,
    energy: float | None = None,
    ranks: HT2Ranks | None = None,
    sweeps: int = 0,
) -> HT2Factors:
    """HT-2 of a T x C x D1 x D2 kernel with ranks from `energy` or given explicitly.

    U1 and U3 are the leading left singular vectors of the mode-0 and mode-2 unfoldings of X;
    G1 is the leading R13 left singular vectors of the projected core M, G2 = G1^T M.
    `sweeps` rounds of alternating least squares then lower the error at the same ranks
    (0: the paper's one-pass truncation). Float32 kernels are decomposed in float32 (ranks
    still by the exact rule, see `spectrum`), others in float64; returned in the kernel's dtype.
    The work is done on the kernel divided by a power of two near its largest entry, which G2
    takes back at the end, so any scale decomposes alike.
    """
    if kernel.dim() != 4:
        raise ValueError(f"HT-2 needs a 4-D kernel, got shape {tuple(kernel.shape)}")
    if (energy is None) == (ranks is None):
        raise ValueError("give exactly one of energy or ranks")
    if sweeps < 0:
        raise ValueError(f"sweeps must be >= 0, got {sweeps}")
    unit, exponent = normalized(kernel.detach().to(working_dtype(kernel)))
    x = _permuted(unit)
    c, d1, t, d2 = x.shape
    into = spectrum(x.reshape(c, -1), energy)
    out = spectrum(x.permute(2, 0, 1, 3).reshape(t, -1), energy)
    if ranks is None:
        split = spectrum(x.reshape(c * d1, t * d2), energy, vectors=False)
        ranks = HT2Ranks(into.rank, split.rank, out.rank)
    chosen = ht2_clipped_ranks(ranks, kernel.shape)
    u1, u3 = into.vectors[:, : chosen.r1], out.vectors[:, : chosen.r3]
    g1, g2 = _best_core(x, u1, u3, chosen.r13)
    for _ in range(sweeps):
        u1, u3 = _als_sweep(x, u1, g1, g2, u3)
        g1, g2 = _best_core(x, u1, u3, chosen.r13)
    rel_error = _rel_error(x, g2, lambda: ht2_reconstruct_x(u1, g1, g2, u3))
    g2 = times_power_of_two(g2, exponent)
    dtype = kernel.dtype
    return HT2Factors(u1.to(dtype), g1.to(dtype), g2.to(dtype), u3.to(dtype), chosen, rel_error)


def _best_core(
    x: torch.Tensor, u1: torch.Tensor, u3: torch.Tensor, r13: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(G1, G2) of least error for orthonormal U1 and U3: the rank-R13 truncation of the
    projected core M ((R1 D1) x (R3 D2)); G1 orthonormal, so the result projects X."""
    r1, r3, d1, d2 = u1.shape[1], u3.shape[1], x.shape[1], x.shape[3]
    core = torch.einsum("tb,ahtw->ahbw", u3, torch.einsum("ca,chtw->ahtw", u1, x))
    m = core.reshape(r1 * d1, r3 * d2)
    g = spectrum(m).vectors[:, :r13]
    return g.reshape(r1, d1, r13), (g.T @ m).reshape(r13, r3, d2)


def _als_sweep(
    x: torch.Tensor, u1: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, u3: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One alternating least-squares pass: U1 best for the rest fixed, then U3; each
    re-orthonormalised (its triangular factor goes into G1 or G2, which the caller refits)."""
    c, t = x.shape[0], x.shape[2]
    rest = torch.einsum("ahk,kbw,tb->ahtw", g1, g2, u3).reshape(u1.shape[1], -1)
    u1 = x.reshape(c, -1) @ torch.linalg.pinv(rest)
    u1, tri = torch.linalg.qr(u1)
    g1 = torch.einsum("ij,jhk->ihk", tri, g1)
    rest = torch.einsum("ca,ahk,kbw->bchw", u1, g1, g2).reshape(u3.shape[1], -1)
    u3 = x.permute(2, 0, 1, 3).reshape(t, -1) @ torch.linalg.pinv(rest)
    return u1, torch.linalg.qr(u3)[0]


def _rel_error(x: torch.Tensor, g2: torch.Tensor, rebuild: Callable[[], torch.Tensor]) -> float:
    """||X - approx|| / ||X||. The approximation is an orthogonal projection of X whose norm is
    ||G2||, so the error is sqrt(||X||^2 - ||G2||^2) unless cancellation makes that imprecise."""
    whole = x.to(torch.float64).square().sum()
    if whole <= 0:
        return 0.0
    squared = 1.0 - float(g2.to(torch.float64).square().sum() / whole)
    if squared >= _DIRECT_ERROR_BELOW**2:
        return math.sqrt(squared)
    return float(torch.linalg.norm(rebuild() - x) / whole.sqrt())


def ht2_reconstruct_x(
    u1: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, u3: torch.Tensor
) -> torch.Tensor:
    """The contraction of the four factors as X (C x D1 x T x D2), one pair at a time."""
    left = torch.einsum("ca,ahk->chk", u1, g1)
    right = torch.einsum("kbw,tb->ktw", g2, u3)
    return torch.einsum("chk,ktw->chtw", left, right)


def ht2_reconstruct(factors: HT2Factors) -> torch.Tensor:
    """The dense kernel (T x C x D1 x D2) that the factors stand for."""
    x = ht2_reconstruct_x(factors.u1, factors.g1, factors.g2, factors.u3)
    return x.permute(2, 0, 1, 3).contiguous()
