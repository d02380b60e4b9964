"""EVBMF rank rule: planted ranks recovered under noise, the known-noise threshold, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from ht2.decomp import evbmf_rank, evbmf_rank_of, squared_singular_values
from ht2.decomp.vbmf import _free_energy, _noise_variance, _x_bar

# (1 + t)(1 + 1 / t) at the published tau_bar = 2.5129 for square matrices (alpha = 1).
X_BAR_SQUARE = (1 + 2.5129) * (1 + 1 / 2.5129)


def planted(m: int, n: int, rank: int, seed: int, sigma: float = 1.0) -> torch.Tensor:
    """Rank-`rank` signal with singular values 1.5x to 3x the noise edge, plus N(0, sigma^2)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, rank, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, rank, generator=g, dtype=torch.float64))
    edge = sigma * (math.sqrt(m) + math.sqrt(n))
    s = torch.linspace(3.0 * edge, 1.5 * edge, rank, dtype=torch.float64)
    noise = sigma * torch.randn(m, n, generator=g, dtype=torch.float64)
    return (u * s) @ v.T + noise


def noise(m: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=torch.float64)


def raw_kept(matrix: torch.Tensor) -> int:
    """Components EVBMF keeps before the floor of 1 (estimated noise variance)."""
    short, long = min(matrix.shape), max(matrix.shape)
    s2 = squared_singular_values(matrix)
    x_bar = _x_bar(short / long)
    return int((s2 > long * _noise_variance(s2, short, long, x_bar) * x_bar).sum())


@pytest.mark.parametrize(
    ("m", "n", "rank"), [(64, 64, 5), (200, 80, 12), (80, 300, 3), (40, 120, 1)]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_rank_is_recovered_exactly(m: int, n: int, rank: int, seed: int) -> None:
    assert evbmf_rank_of(planted(m, n, rank, seed)) == rank


@pytest.mark.parametrize("sigma", [1e-3, 1.0, 50.0])
def test_rank_does_not_depend_on_the_noise_scale(sigma: float) -> None:
    assert evbmf_rank_of(planted(100, 60, 7, seed=3, sigma=sigma)) == 7


def test_float32_input_gives_the_same_rank() -> None:
    assert evbmf_rank_of(planted(64, 96, 6, seed=4).float()) == 6


@pytest.mark.parametrize(("m", "n"), [(64, 64), (200, 80), (80, 300), (2, 100)])
def test_pure_noise_keeps_no_component_and_returns_one(m: int, n: int) -> None:
    for seed in range(5):
        assert raw_kept(noise(m, n, seed)) == 0
        assert evbmf_rank_of(noise(m, n, seed)) == 1


@pytest.mark.parametrize(("m", "n", "rank"), [(64, 64, 5), (200, 80, 12), (80, 300, 3)])
def test_estimated_noise_variance_is_close_to_the_truth(m: int, n: int, rank: int) -> None:
    sigma = 0.7
    s2 = squared_singular_values(planted(m, n, rank, seed=5, sigma=sigma))
    short, long = min(m, n), max(m, n)
    estimate = _noise_variance(s2, short, long, _x_bar(short / long))
    assert estimate == pytest.approx(sigma**2, rel=0.05)


def test_noise_search_finds_the_global_minimum_of_a_dense_grid() -> None:
    s2 = squared_singular_values(planted(120, 90, 10, seed=6))
    short, long = 90, 120
    x_bar = _x_bar(short / long)
    found = math.log(_noise_variance(s2, short, long, x_bar))
    upper = math.log(float(s2.sum()) / (short * long))
    grid = torch.linspace(found - 5.0, upper, 4001, dtype=torch.float64)
    best_on_grid = float(_free_energy(grid, s2, short, long, x_bar).min())
    found_t = torch.tensor([found], dtype=torch.float64)
    at_found = float(_free_energy(found_t, s2, short, long, x_bar))
    assert at_found <= best_on_grid + 1e-9


def test_known_noise_variance_keeps_values_above_the_analytic_threshold() -> None:
    m = n = 50
    sigma2 = 0.3
    cut = m * sigma2 * X_BAR_SQUARE
    s2 = torch.full((50,), 0.5 * cut, dtype=torch.float64)
    s2[:4] = torch.tensor([10.0, 3.0, 1.01, 1.001]) * cut
    s2[4] = 0.999 * cut
    assert evbmf_rank(s2, (m, n), sigma2=sigma2) == 4


def test_known_noise_variance_recovers_the_planted_rank() -> None:
    a = planted(200, 80, 12, seed=7, sigma=2.0)
    s2 = squared_singular_values(a)
    assert evbmf_rank(s2, (200, 80), sigma2=4.0) == 12
    assert evbmf_rank(s2, (200, 80), sigma2=1e-6) == 80
    assert evbmf_rank(s2, (200, 80), sigma2=1e6) == 1


def test_rank_is_invariant_to_transposition() -> None:
    a = planted(150, 70, 9, seed=8)
    s2 = squared_singular_values(a)
    assert evbmf_rank_of(a) == evbmf_rank_of(a.T) == 9
    assert evbmf_rank(s2, (150, 70)) == evbmf_rank(s2, (70, 150)) == 9
    assert evbmf_rank(s2, (150, 70), sigma2=1.0) == evbmf_rank(s2, (70, 150), sigma2=1.0)


def test_spectrum_order_does_not_matter() -> None:
    s2 = squared_singular_values(planted(64, 64, 5, seed=9))
    assert evbmf_rank(s2.flip(0), (64, 64)) == evbmf_rank(s2, (64, 64)) == 5


def test_noiseless_rank_deficient_matrix_gives_its_rank() -> None:
    g = torch.Generator().manual_seed(10)
    a = torch.randn(50, 3, generator=g, dtype=torch.float64)
    a = a @ torch.randn(3, 70, generator=g, dtype=torch.float64)
    assert evbmf_rank_of(a) == 3
    exact = torch.zeros(50, dtype=torch.float64)
    exact[:3] = torch.tensor([9.0, 4.0, 1.0])
    assert evbmf_rank(exact, (50, 70)) == 3


def test_zero_and_tiny_matrices_give_one() -> None:
    assert evbmf_rank_of(torch.zeros(5, 7)) == 1
    assert evbmf_rank(torch.zeros(5), (5, 7), sigma2=1.0) == 1
    assert evbmf_rank_of(noise(1, 9, seed=11)) == 1
    assert evbmf_rank_of(noise(9, 1, seed=11)) == 1
    assert evbmf_rank_of(torch.ones(1, 1)) == 1
    assert evbmf_rank(torch.tensor([100.0]), (1, 30), sigma2=1.0) == 1


@pytest.mark.parametrize(
    ("s2", "shape", "message"),
    [
        (torch.ones(4), (4, 5, 6), "pair of ints"),
        (torch.ones(4), (4.0, 5), "pair of ints"),
        (torch.ones(4), (0, 5), "both sides >= 1"),
        (torch.ones(3), (4, 5), "min\\(m, n\\) = 4"),
        (torch.ones(5), (5, 4), "min\\(m, n\\) = 4"),
        (torch.ones(2, 2), (4, 5), "1-D tensor"),
        (torch.tensor([1.0, float("nan")]), (2, 5), "finite"),
    ],
)
def test_bad_inputs_raise_clear_errors(s2: torch.Tensor, shape: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evbmf_rank(s2, shape)


@pytest.mark.parametrize("sigma2", [0.0, -1.0, float("inf")])
def test_bad_noise_variance_raises(sigma2: float) -> None:
    with pytest.raises(ValueError, match="sigma2 must be a positive finite"):
        evbmf_rank(torch.ones(4), (4, 5), sigma2=sigma2)


def test_rank_of_needs_a_matrix() -> None:
    with pytest.raises(ValueError, match="2-D matrix"):
        evbmf_rank_of(torch.ones(2, 3, 4))
