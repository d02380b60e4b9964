"""Hierarchical Tucker-2 (HT-2) of a 4-D convolution kernel, as in Gabor & Zdunek (2023)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ht2.decomp.basis import left_singular, squared_singular_values
from ht2.decomp.ranks import energy_rank


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


def ht2_ranks(kernel: torch.Tensor, energy: float) -> HT2Ranks:
    """The energy ranks (R1, R13, R3) of a kernel, each from one matricization of X."""
    x = _permuted(kernel.detach().to(torch.float64))
    c, d1, t, d2 = x.shape
    r1 = energy_rank(squared_singular_values(x.reshape(c, -1)), energy)
    r3 = energy_rank(squared_singular_values(x.permute(2, 0, 1, 3).reshape(t, -1)), energy)
    r13 = energy_rank(squared_singular_values(x.reshape(c * d1, t * d2)), energy)
    return HT2Ranks(r1, r13, r3)


def _clipped(ranks: HT2Ranks, shape: torch.Size) -> HT2Ranks:
    """Ranks no larger than the matrices they truncate allow."""
    t, c, d1, d2 = shape
    r1 = max(1, min(ranks.r1, c, d1 * t * d2))
    r3 = max(1, min(ranks.r3, t, c * d1 * d2))
    r13 = max(1, min(ranks.r13, r1 * d1, r3 * d2))
    return HT2Ranks(r1, r13, r3)


def ht2_decompose(
    kernel: torch.Tensor, energy: float | None = None, ranks: HT2Ranks | None = None
) -> HT2Factors:
    """HT-2 of a T x C x D1 x D2 kernel with ranks from `energy` or given explicitly.

    U1 and U3 are the leading left singular vectors of the mode-0 and mode-2 unfoldings of X;
    G1 is the leading R13 left singular vectors of the projected core M, G2 = G1^T M.
    Computed in float64, returned in the kernel's dtype.
    """
    if kernel.dim() != 4:
        raise ValueError(f"HT-2 needs a 4-D kernel, got shape {tuple(kernel.shape)}")
    if (energy is None) == (ranks is None):
        raise ValueError("give exactly one of energy or ranks")
    x = _permuted(kernel.detach().to(torch.float64))
    c, d1, t, d2 = x.shape
    u1_all, s2_in = left_singular(x.reshape(c, -1))
    u3_all, s2_out = left_singular(x.permute(2, 0, 1, 3).reshape(t, -1))
    if ranks is None:
        s2_split = squared_singular_values(x.reshape(c * d1, t * d2))
        ranks = HT2Ranks(
            energy_rank(s2_in, energy), energy_rank(s2_split, energy), energy_rank(s2_out, energy)
        )
    chosen = _clipped(ranks, kernel.shape)
    u1, u3 = u1_all[:, : chosen.r1], u3_all[:, : chosen.r3]
    core = torch.einsum("tb,ahtw->ahbw", u3, torch.einsum("ca,chtw->ahtw", u1, x))
    m = core.reshape(chosen.r1 * d1, chosen.r3 * d2)
    g = left_singular(m)[0][:, : chosen.r13]
    g1 = g.reshape(chosen.r1, d1, chosen.r13)
    g2 = (g.T @ m).reshape(chosen.r13, chosen.r3, d2)
    approx = ht2_reconstruct_x(u1, g1, g2, u3)
    rel_error = float(torch.linalg.norm(approx - x) / torch.linalg.norm(x).clamp_min(1e-300))
    dtype = kernel.dtype
    return HT2Factors(u1.to(dtype), g1.to(dtype), g2.to(dtype), u3.to(dtype), chosen, rel_error)


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
