"""Empirical variational Bayesian matrix factorisation (EVBMF) as a rank rule.

Follows the global analytic solution of Nakajima, Sugiyama, Babacan & Tomioka (2013), the rule
Kim et al. (2016) used to pick Tucker-2 ranks. For an L x M matrix (L <= M, alpha = L / M) with
singular values gamma_h and noise variance sigma2, write x_h = gamma_h^2 / (M sigma2). The EVB
estimate of component h is non-zero exactly when x_h > x_bar = (1 + tau_bar)(1 + alpha / tau_bar),
where tau_bar is the root above sqrt(alpha) of log(1 + t) + alpha log(1 + t / alpha) - t.
When sigma2 is unknown it is the minimiser of the free energy within its analytic bounds.
"""

from __future__ import annotations

import math

import torch

from ht2.decomp.basis import squared_singular_values as _spectrum

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_GOLDEN_STEPS = 80
_SIGMA2_FLOOR = 1e-30


def evbmf_rank(
    squared_singular_values: torch.Tensor, shape: tuple[int, int], sigma2: float | None = None
) -> int:
    """Number of components EVBMF keeps for an m x n matrix with this spectrum (at least 1).

    `squared_singular_values` holds all min(m, n) squared singular values; `sigma2` is the noise
    variance per entry, estimated by minimising the EVB free energy when None.
    """
    s2, short, long = _checked(squared_singular_values, shape)
    alpha = short / long
    x_bar = _x_bar(alpha)
    if sigma2 is None:
        if s2.sum() <= 0:
            return 1
        sigma2 = _noise_variance(s2, short, long, x_bar)
    else:
        sigma2 = float(sigma2)
        if not (math.isfinite(sigma2) and sigma2 > 0):
            raise ValueError(f"sigma2 must be a positive finite noise variance, got {sigma2}")
    kept = int((s2 > long * sigma2 * x_bar).sum().item())
    return max(kept, 1)


def evbmf_rank_of(matrix: torch.Tensor) -> int:
    """EVBMF rank of a 2-D `matrix`, noise variance estimated from the matrix itself."""
    if matrix.dim() != 2:
        raise ValueError(f"evbmf_rank_of needs a 2-D matrix, got shape {tuple(matrix.shape)}")
    m, n = matrix.shape
    return evbmf_rank(_spectrum(matrix), (m, n))


def _checked(
    squared_singular_values: torch.Tensor, shape: tuple[int, int]
) -> tuple[torch.Tensor, int, int]:
    """Validate the inputs; return the spectrum (float64, decreasing, >= 0), L = min, M = max.

    Values at or below max * M * float64 eps are set to zero: a spectrum computed from a Gram
    matrix cannot resolve them, and leaving them as pseudo-noise misleads the noise estimate.
    """
    if len(shape) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ValueError(f"shape must be a pair of ints (m, n), got {shape!r}")
    m, n = shape
    if m < 1 or n < 1:
        raise ValueError(f"shape must have both sides >= 1, got {tuple(shape)}")
    short, long = min(m, n), max(m, n)
    s2 = torch.as_tensor(squared_singular_values).detach().to(torch.float64)
    if s2.dim() != 1 or s2.numel() != short:
        raise ValueError(
            f"expected all min(m, n) = {short} squared singular values of a {m} x {n} matrix "
            f"as a 1-D tensor, got shape {tuple(s2.shape)}"
        )
    if not bool(torch.isfinite(s2).all()):
        raise ValueError("squared singular values must be finite (found NaN or inf)")
    s2 = s2.clamp_min(0).sort(descending=True).values
    resolution = float(s2[0]) * long * torch.finfo(torch.float64).eps
    s2 = torch.where(s2 > resolution, s2, torch.zeros_like(s2))
    return s2, short, long


def _x_bar(alpha: float) -> float:
    """EVB threshold on x = gamma^2 / (M sigma2): (1 + tau_bar)(1 + alpha / tau_bar)."""
    tau_bar = _tau_bar(alpha)
    return (1.0 + tau_bar) * (1.0 + alpha / tau_bar)


def _tau_bar(alpha: float) -> float:
    """Root above sqrt(alpha) of log(1 + t) + alpha log(1 + t / alpha) - t, by bisection.

    The function rises from 0 up to t = sqrt(alpha) and then falls without bound, so the root
    is unique; it is close to 2.5129 sqrt(alpha) for moderate alpha.
    """

    def psi(t: float) -> float:
        return math.log1p(t) + alpha * math.log1p(t / alpha) - t

    low, high = math.sqrt(alpha), 2.0 * math.sqrt(alpha) + 1.0
    while psi(high) > 0:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if psi(middle) > 0:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _free_energy(
    log_sigma2: torch.Tensor, s2: torch.Tensor, short: int, long: int, x_bar: float
) -> torch.Tensor:
    """EVB free energy (times 2 / M, constants dropped) at each entry of `log_sigma2`.

    Equals L log sigma2 + sum_h x_h over null components plus, over kept ones (x_h > x_bar),
    1 + alpha + alpha / tau_h + log(1 + tau_h) + alpha log(1 + tau_h / alpha), where tau_h is
    the larger root of tau^2 - (x_h - 1 - alpha) tau + alpha = 0. The x - tau of the textbook
    form is rewritten as 1 + alpha + alpha / tau to avoid cancellation at large x.
    """
    alpha = short / long
    x = s2.unsqueeze(0) / (long * log_sigma2.exp().unsqueeze(1))
    kept = x > x_bar
    b = torch.where(kept, x, torch.full_like(x, x_bar)) - 1.0 - alpha
    tau = 0.5 * (b + (b.square() - 4.0 * alpha).clamp_min(0).sqrt())
    on = 1.0 + alpha + alpha / tau + torch.log1p(tau) + alpha * torch.log1p(tau / alpha)
    return short * log_sigma2 + torch.where(kept, on, x).sum(1)


def _noise_variance(s2: torch.Tensor, short: int, long: int, x_bar: float) -> float:
    """Noise variance minimising the EVB free energy over its analytic bounds.

    Bounds: sigma2 <= ||V||^2 / (L M) and sigma2 >= max(gamma_{H+1}^2 / (M x_bar),
    mean_{h > H} gamma_h^2 / M) with H = ceil(L / (1 + alpha)) - 1, the most EVB can keep.
    The objective is smooth between the points where a component switches on and its kinks there
    are never minima, so each smooth piece gets its own golden-section search (all in parallel,
    in log sigma2) and the best piece wins. `s2` must be decreasing and not all zero.
    """
    alpha = short / long
    most = min(math.ceil(short / (1.0 + alpha)) - 1, short)
    scale = float(s2.sum()) / (short * long)
    if most <= 0:
        return scale
    s2 = s2 / scale
    tail = s2[most:]
    low = max(float(tail[0]) / (long * x_bar), float(tail.mean()) / long, _SIGMA2_FLOOR)
    switches = s2[:most] / (long * x_bar)
    inside = switches[(switches > low) & (switches < 1.0)]
    edges = torch.cat([torch.tensor([low, 1.0], dtype=torch.float64), inside]).unique().log()
    if edges.numel() == 1:
        return scale * float(edges.exp())
    a, b = edges[:-1].clone(), edges[1:].clone()
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = (_free_energy(p, s2, short, long, x_bar) for p in (c, d))
    for _ in range(_GOLDEN_STEPS):
        left = fc < fd
        a, b = torch.where(left, a, c), torch.where(left, d, b)
        step = _GOLDEN * (b - a)
        probe = torch.where(left, b - step, a + step)
        fprobe = _free_energy(probe, s2, short, long, x_bar)
        c, d = torch.where(left, probe, d), torch.where(left, c, probe)
        fc, fd = torch.where(left, fprobe, fd), torch.where(left, fc, fprobe)
    candidates = torch.cat([edges, 0.5 * (a + b)])
    best = _free_energy(candidates, s2, short, long, x_bar).argmin()
    return scale * float(candidates[best].exp())
