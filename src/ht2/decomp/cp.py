"""CP (canonical polyadic) of a 4-D convolution kernel by ALS, as in Lebedev et al. (2015)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ht2.decomp.basis import left_singular, normalized, times_power_of_two
from ht2.decomp.ranks import check_energy
from ht2.decomp.threads import sized_by_first


@dataclass(frozen=True)
class CPFactors:
    """W[t, c, h, w] ~= sum_r U_out[t, r] U_in[c, r] V[h, r] H[w, r] (column scales in U_out)."""

    u_out: torch.Tensor  # T x R
    u_in: torch.Tensor  # C x R
    vertical: torch.Tensor  # D1 x R
    horizontal: torch.Tensor  # D2 x R
    rank: int
    rel_error: float


def _unfold(x: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode-n unfolding: I_n x (product of the other sizes, in their order)."""
    return x.movedim(mode, 0).reshape(x.shape[mode], -1)


def _khatri_rao(factors: list[torch.Tensor], skip: int) -> torch.Tensor:
    """Column-wise Kronecker product of every factor but `skip`, rows in unfolding order."""
    others = [f for n, f in enumerate(factors) if n != skip]
    product = others[0]
    for factor in others[1:]:
        product = (product[:, None, :] * factor[None, :, :]).reshape(-1, product.shape[1])
    return product


def _hadamard_gram(factors: list[torch.Tensor], skip: int | None = None) -> torch.Tensor:
    """The element-wise product of the Gram matrices F^T F of every factor but `skip`."""
    gram = None
    for n, factor in enumerate(factors):
        if n != skip:
            gram = factor.T @ factor if gram is None else gram * (factor.T @ factor)
    return gram


def _initial(x: torch.Tensor, rank: int) -> list[torch.Tensor]:
    """Leading left singular vectors of each unfolding; seeded random columns past their count."""
    generator = torch.Generator().manual_seed(0)
    factors = []
    for mode in range(x.dim()):
        basis = left_singular(_unfold(x, mode))[0][:, :rank]
        missing = rank - basis.shape[1]
        if missing > 0:
            extra = torch.randn(x.shape[mode], missing, generator=generator, dtype=x.dtype)
            basis = torch.cat([basis, extra / extra.norm(dim=0).clamp_min(1e-300)], dim=1)
        factors.append(basis.to(x.device))
    return factors


def _als(
    x: torch.Tensor, rank: int, max_iter: int, tol: float, ridge: float
) -> tuple[list[torch.Tensor], float]:
    """Rank-`rank` CP of the float64 tensor `x`; the column scales end up in the first factor."""
    factors = _initial(x, rank)
    norm2 = (x * x).sum()
    if norm2 <= 0:
        return [factors[0] * 0, *factors[1:]], 0.0
    scales = torch.ones(rank, dtype=x.dtype, device=x.device)
    eye = torch.eye(rank, dtype=x.dtype, device=x.device)
    previous = float("inf")
    for _ in range(max_iter):
        for mode in range(x.dim()):
            mttkrp = _unfold(x, mode) @ _khatri_rao(factors, mode)
            gram = _hadamard_gram(factors, mode)
            damping = ridge * gram.diagonal().mean().clamp_min(1e-300)
            updated = torch.linalg.solve(gram + damping * eye, mttkrp.T).T
            scales = updated.norm(dim=0).clamp_min(1e-300)
            factors[mode] = updated / scales
        inner = (mttkrp * factors[-1] * scales).sum()
        approx2 = scales @ _hadamard_gram(factors) @ scales
        error = float(((norm2 - 2 * inner + approx2).clamp_min(0) / norm2).sqrt())
        if abs(previous - error) < tol:
            break
        previous = error
    factors[0] = factors[0] * scales
    approx = (factors[0] @ _khatri_rao(factors, 0).T).reshape(x.shape)
    return factors, float(torch.linalg.norm(approx - x) / norm2.sqrt())


def cp_max_rank(shape: torch.Size) -> int:
    """The break-even CP rank: R (T + C + D1 + D2) no more than T C D1 D2 weights."""
    t, c, d1, d2 = shape
    return max(1, (t * c * d1 * d2) // (t + c + d1 + d2))


@sized_by_first
def cp_decompose(
    kernel: torch.Tensor,
    energy: float | None = None,
    rank: int | None = None,
    max_iter: int = 100,
    tol: float = 1e-7,
    ridge: float = 1e-9,
    search_iter: int = 25,
) -> CPFactors:
    """CP of a T x C x D1 x D2 kernel by ALS at a given `rank`, or the rank an `energy` needs.

    ALS starts from the leading left singular vectors of each unfolding, normalises factor
    columns every iteration, damps each normal equation by `ridge` times its mean diagonal
    (against degenerate, diverging components), and stops after `max_iter` sweeps or when the
    relative error moves by less than `tol`. With `energy`, the rank is the smallest R in
    [1, cp_max_rank] whose relative error^2 is at most 1 - energy, found by bisection with
    `search_iter`-sweep fits (R_max when none is); the final fit uses the full budget.
    Computed in float64 on the kernel divided by a power of two near its largest entry (U_out
    takes it back), returned in the kernel's dtype; `rel_error` is the final true error.
    """
    if kernel.dim() != 4:
        raise ValueError(f"CP needs a 4-D kernel, got shape {tuple(kernel.shape)}")
    if (energy is None) == (rank is None):
        raise ValueError("give exactly one of energy or rank")
    x, exponent = normalized(kernel.detach().to(torch.float64))
    if rank is not None:
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        chosen = rank
    else:
        budget = 1.0 - check_energy(energy)

        def fits(r: int) -> bool:
            return _als(x, r, search_iter, tol, ridge)[1] ** 2 <= budget

        low, high = 1, cp_max_rank(kernel.shape)
        if fits(high):
            while low < high:
                middle = (low + high) // 2
                if fits(middle):
                    high = middle
                else:
                    low = middle + 1
        chosen = high
    factors, rel_error = _als(x, chosen, max_iter, tol, ridge)
    factors[0] = times_power_of_two(factors[0], exponent)
    dtype = kernel.dtype
    u_out, u_in, vertical, horizontal = (f.to(dtype) for f in factors)
    return CPFactors(u_out, u_in, vertical, horizontal, chosen, rel_error)


@sized_by_first
def cp_fit_error(
    kernel: torch.Tensor, rank: int, max_iter: int = 25, tol: float = 1e-7, ridge: float = 1e-9
) -> float:
    """Relative error of a short rank-`rank` ALS fit: what the energy rank search compares."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    return _als(normalized(kernel.detach().to(torch.float64))[0], rank, max_iter, tol, ridge)[1]


def cp_reconstruct(factors: CPFactors) -> torch.Tensor:
    """The dense kernel (T x C x D1 x D2) that the factors stand for."""
    return torch.einsum(
        "tr,cr,hr,wr->tchw", factors.u_out, factors.u_in, factors.vertical, factors.horizontal
    )
