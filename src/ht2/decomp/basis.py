"""Leading singular subspaces of a matrix, computed once and reused for ranks and factors.

`left_singular` and `squared_singular_values` are the exact float64 reference. `spectrum` is
what the decompositions use: it works in float32 when the weights are float32 (Gram matrix of
the smaller side, symmetric eigen-solve) and falls back to the float64 spectrum only when the
energy rank sits too close to its threshold for float32 to decide it, so every rank equals
the one of the exact rule. Every matrix is first divided by a power of two near its largest
entry (`normalized`), so weights of any scale neither overflow nor underflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ht2.decomp.ranks import energy_rank
from ht2.decomp.threads import sized_by_first

_GRAM_BLOCK = 1024  # row block of gram(): only blocks on and above the diagonal are multiplied
_SLACK = 8.0  # safety factor on the float32 error estimate of a cumulative energy fraction


@sized_by_first
def left_singular(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors and squared singular values of `matrix`, in float64, largest first.

    Returns (U, s2) with U of shape (m, k), k = min(m, n). A wide (or nearly square) matrix
    goes through the eigen-decomposition of its Gram matrix A A^T; a tall one through QR and
    the eigen-decomposition of R R^T, so no SVD is ever formed.
    """
    return _left_singular(matrix.detach().to(torch.float64))


@sized_by_first
def squared_singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Squared singular values of `matrix` in float64, largest first (no vectors)."""
    a = matrix.detach().to(torch.float64)
    return _squared_singular_values(a)


def normalized(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(`tensor` times 2**-e, e), the largest magnitude of the result in [0.5, 1).

    The decompositions work on the result and scale one factor back by 2**e, so a kernel
    times 1e30 or 1e-30 neither overflows nor underflows in its Gram matrices; a power of two
    scales exactly. Zero or empty tensors come back as they are (e = 0); NaN or Inf entries
    raise ValueError, as no factors can stand for them.
    """
    if tensor.numel() == 0:
        return tensor, 0
    peak = float(tensor.detach().abs().max())
    if not math.isfinite(peak):
        raise ValueError("cannot decompose weights that hold NaN or Inf entries")
    if peak == 0.0:
        return tensor, 0
    exponent = math.frexp(peak)[1]
    return times_power_of_two(tensor, -exponent), exponent


def times_power_of_two(tensor: torch.Tensor, exponent: int) -> torch.Tensor:
    """`tensor` times 2**`exponent`, in two steps so that neither power leaves float32's range."""
    if exponent == 0:
        return tensor
    half = exponent // 2
    return tensor * 2.0**half * 2.0 ** (exponent - half)


def working_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float64 for float64 input, else float32 (float64 when float32 matmuls may be lowered)."""
    if tensor.dtype == torch.float64 or torch.get_float32_matmul_precision() != "highest":
        return torch.float64
    return torch.float32


def gram(a: torch.Tensor) -> torch.Tensor:
    """a @ a.T; on the CPU only the row blocks on and above the diagonal are multiplied."""
    m = a.shape[0]
    if m < 2 * _GRAM_BLOCK or a.device.type != "cpu":
        return a @ a.T
    g = torch.empty(m, m, dtype=a.dtype, device=a.device)
    for start in range(0, m, _GRAM_BLOCK):
        stop = min(start + _GRAM_BLOCK, m)
        g[start:stop, start:] = a[start:stop] @ a[start:].T
        g[stop:, start:stop] = g[start:stop, stop:].T
    return g


@dataclass(frozen=True)
class Spectrum:
    """Squared singular values (float64, largest first), left singular vectors if asked for
    (m x k, largest first, in the working dtype) and the energy rank if an energy was given."""

    s2: torch.Tensor
    vectors: torch.Tensor | None
    rank: int | None


@sized_by_first
def spectrum(matrix: torch.Tensor, energy: float | None = None, vectors: bool = True) -> Spectrum:
    """Spectrum of `matrix` in its working dtype, with the rank of the exact float64 rule.

    The matrix is used in the dtype it comes in (see `working_dtype`). Under float32 the
    energy rank is checked against an error bound of the float32 spectrum; when the
    threshold falls within it, the float64 spectrum decides (vectors stay float32).
    """
    a = matrix.detach()
    exact = a.dtype == torch.float64
    if vectors:
        u, s2 = _left_singular(a)
    else:
        u, s2 = None, _squared_singular_values(a)
    if energy is None:
        return Spectrum(s2, u, None)
    rank = energy_rank(s2, energy)
    if not exact and _undecided(s2, energy, rank, max(a.shape)):
        s2 = squared_singular_values(a)
        rank = energy_rank(s2, energy)
    return Spectrum(s2, u, rank)


def _undecided(s2: torch.Tensor, energy: float, rank: int, inner: int) -> bool:
    """Whether float32 rounding could move a cumulative fraction across `energy` at `rank`."""
    total = float(s2.sum())
    if energy >= 1.0 or total <= 0.0:
        return False
    eps = torch.finfo(torch.float32).eps
    slack = _SLACK * eps * (s2.numel() + math.sqrt(inner)) * float(s2[0]) / total
    fraction = torch.cumsum(s2, 0) / total
    above = float(fraction[rank - 1]) - energy
    below = energy - float(fraction[rank - 2]) if rank >= 2 else math.inf
    return min(above, below) <= slack


def _left_singular(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Wide or nearly square: eigh of the Gram of the rows; tall: QR, then eigh of R R^T.

    Computed on the normalized matrix, the squared singular values scaled back (float64).
    """
    a, exponent = normalized(a)
    m, n = a.shape
    k = min(m, n)
    if m <= 2 * n:
        eigenvalues, vectors = _eigh(gram(a))
        u, s2 = vectors.flip(1)[:, :k], eigenvalues.flip(0)[:k]
    else:
        q, r = torch.linalg.qr(a)
        eigenvalues, vectors = _eigh(gram(r))
        u, s2 = q @ vectors.flip(1), eigenvalues.flip(0)
    return u, times_power_of_two(s2.to(torch.float64).clamp_min(0), 2 * exponent)


def _squared_singular_values(a: torch.Tensor) -> torch.Tensor:
    a, exponent = normalized(a)
    g = gram(a) if a.shape[0] <= a.shape[1] else gram(a.T)
    s2 = _eigh(g, vectors=False)[0].flip(0).to(torch.float64).clamp_min(0)
    return times_power_of_two(s2, 2 * exponent)


def _eigh(g: torch.Tensor, vectors: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eigenvalues (ascending) and, if asked, vectors of a symmetric matrix; a float32 solve
    that fails to converge (nearly repeated eigenvalues) is redone in float64."""
    try:
        if vectors:
            return torch.linalg.eigh(g)
        return torch.linalg.eigvalsh(g), None
    except torch.linalg.LinAlgError:
        if g.dtype == torch.float64:
            raise
    values, found = _eigh(g.to(torch.float64), vectors)
    return values.to(g.dtype), None if found is None else found.to(g.dtype)
