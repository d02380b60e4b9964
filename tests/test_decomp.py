"""The pure math: energy rule, exact recovery of low-rank factors, error reporting."""

from __future__ import annotations

import pytest
import torch

from ht2.decomp import (
    HT2Ranks,
    energy_rank,
    ht2_decompose,
    ht2_ranks,
    ht2_reconstruct,
    left_singular,
    truncated_svd,
    tucker1,
)


def test_energy_rank_is_strictly_greater_than_energy() -> None:
    s2 = torch.tensor([5.0, 3.0, 2.0])  # cumulative 0.5, 0.8, 1.0
    assert energy_rank(s2, 0.5) == 2  # 0.5 is not > 0.5
    assert energy_rank(s2, 0.49) == 1
    assert energy_rank(s2, 0.8) == 3
    assert energy_rank(s2, 0.79) == 2


def test_energy_one_keeps_everything_and_zero_spectrum_keeps_one() -> None:
    assert energy_rank(torch.tensor([1.0, 1e-20, 0.0]), 1.0) == 3
    assert energy_rank(torch.zeros(4), 0.9) == 1


@pytest.mark.parametrize("energy", [0.0, -0.1, 1.5, float("nan")])
def test_energy_outside_unit_interval_is_refused(energy: float) -> None:
    with pytest.raises(ValueError, match=r"energy must be in \(0, 1\]"):
        energy_rank(torch.ones(3), energy)


@pytest.mark.parametrize("shape", [(6, 40), (40, 6), (9, 9)])
def test_left_singular_matches_torch_svd(shape: tuple[int, int]) -> None:
    a = torch.randn(*shape, dtype=torch.float64)
    u, s2 = left_singular(a)
    expected = torch.linalg.svdvals(a).square()
    torch.testing.assert_close(s2, expected, rtol=1e-10, atol=1e-10)
    k = min(shape)
    torch.testing.assert_close(u.T @ u, torch.eye(k, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close((u @ u.T) @ a, a, atol=1e-10, rtol=0)


def _random_ht2(t: int, c: int, d1: int, d2: int, ranks: HT2Ranks) -> torch.Tensor:
    u1 = torch.randn(c, ranks.r1, dtype=torch.float64)
    g1 = torch.randn(ranks.r1, d1, ranks.r13, dtype=torch.float64)
    g2 = torch.randn(ranks.r13, ranks.r3, d2, dtype=torch.float64)
    u3 = torch.randn(t, ranks.r3, dtype=torch.float64)
    return torch.einsum("ca,ahk,kbw,tb->tchw", u1, g1, g2, u3)


def test_ht2_recovers_a_kernel_built_from_known_factors() -> None:
    true = HT2Ranks(r1=4, r13=5, r3=3)
    kernel = _random_ht2(12, 10, 3, 3, true)
    factors = ht2_decompose(kernel, ranks=true)
    assert factors.rel_error < 1e-5
    rebuilt = ht2_reconstruct(factors)
    assert torch.linalg.norm(rebuilt - kernel) / torch.linalg.norm(kernel) < 1e-5


def test_energy_rule_finds_the_true_ht2_ranks_of_an_exact_kernel() -> None:
    true = HT2Ranks(r1=4, r13=5, r3=3)
    kernel = _random_ht2(12, 10, 3, 3, true)
    assert ht2_ranks(kernel, 0.999999) == true
    assert ht2_decompose(kernel, energy=0.999999).ranks == true


def test_ht2_factor_shapes_and_dtype_follow_the_kernel() -> None:
    kernel = torch.randn(8, 6, 3, 5)
    factors = ht2_decompose(kernel, energy=0.8)
    r = factors.ranks
    assert factors.u1.shape == (6, r.r1) and factors.u3.shape == (8, r.r3)
    assert factors.g1.shape == (r.r1, 3, r.r13) and factors.g2.shape == (r.r13, r.r3, 5)
    assert all(f.dtype == torch.float32 for f in (factors.u1, factors.g1, factors.g2, factors.u3))


def test_ht2_error_is_the_true_relative_error_and_shrinks_with_energy() -> None:
    kernel = torch.randn(16, 16, 3, 3, dtype=torch.float64)
    errors = []
    for energy in (0.5, 0.8, 0.95):
        factors = ht2_decompose(kernel, energy=energy)
        actual = torch.linalg.norm(ht2_reconstruct(factors) - kernel) / torch.linalg.norm(kernel)
        assert factors.rel_error == pytest.approx(float(actual), rel=1e-9)
        errors.append(factors.rel_error)
    assert errors[0] > errors[1] > errors[2]


def test_ht2_inner_rank_is_clipped_to_the_projected_core() -> None:
    kernel = torch.randn(4, 4, 3, 3)
    factors = ht2_decompose(kernel, ranks=HT2Ranks(r1=1, r13=50, r3=1))
    assert factors.ranks == HT2Ranks(r1=1, r13=3, r3=1)


@pytest.mark.parametrize("shape", [(5, 30), (30, 5)])
def test_truncated_svd_is_the_best_rank_r_approximation(shape: tuple[int, int]) -> None:
    a = torch.randn(*shape, dtype=torch.float64)
    factors = truncated_svd(a, rank=3)
    s = torch.linalg.svdvals(a)
    best = torch.sqrt(s[3:].square().sum()) / torch.linalg.norm(a)
    actual = torch.linalg.norm(factors.second @ factors.first - a) / torch.linalg.norm(a)
    assert float(actual) == pytest.approx(float(best), rel=1e-9)
    assert factors.rel_error == pytest.approx(float(best), rel=1e-9)


def test_tucker1_recovers_an_exactly_low_rank_kernel() -> None:
    kernel = torch.einsum("tr,rchw->tchw", torch.randn(10, 2), torch.randn(2, 3, 3, 3))
    factors = tucker1(kernel, energy=0.99999)
    assert factors.rank == 2 and factors.first.shape == (2, 3, 3, 3)
    rebuilt = torch.einsum("tr,rchw->tchw", factors.second, factors.first)
    assert torch.linalg.norm(rebuilt - kernel) / torch.linalg.norm(kernel) < 1e-5


def test_exactly_one_of_energy_or_rank_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        truncated_svd(torch.randn(3, 3))
    with pytest.raises(ValueError, match="exactly one"):
        ht2_decompose(torch.randn(3, 3, 3, 3), energy=0.9, ranks=HT2Ranks(1, 1, 1))
