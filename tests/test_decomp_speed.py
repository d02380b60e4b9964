"""The fast (float32) decomposition path: same ranks as the float64 rule, same subspaces."""

from __future__ import annotations

import pytest
import torch

import ht2.decomp.basis as basis
from ht2.decomp import (
    energy_rank,
    ht2_decompose,
    ht2_ranks,
    squared_singular_values,
    truncated_svd,
    tucker2_decompose,
)
from ht2.decomp.basis import gram, spectrum, working_dtype

ENERGIES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def _with_spectrum(m: int, n: int, s: torch.Tensor, seed: int) -> torch.Tensor:
    """An m x n float32 matrix with singular values `s` (length min(m, n))."""
    generator = torch.Generator().manual_seed(seed)
    k = min(m, n)
    u = torch.linalg.qr(torch.randn(m, k, generator=generator, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))[0]
    return ((u * s) @ v.T).float()


def _projector(vectors: torch.Tensor) -> torch.Tensor:
    q = vectors.to(torch.float64)
    return q @ q.T


def test_gram_by_blocks_equals_the_full_product() -> None:
    a = torch.randn(2050, 8, dtype=torch.float64)
    torch.testing.assert_close(gram(a), a @ a.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(30, 200), (200, 30), (90, 80), (80, 90), (64, 64)])
def test_float32_spectrum_matches_the_float64_one(shape: tuple[int, int]) -> None:
    a = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    found = spectrum(a)
    exact = torch.linalg.svdvals(a.double()).square()
    assert found.vectors.dtype == torch.float32 and found.vectors.shape == (shape[0], min(shape))
    torch.testing.assert_close(found.s2, exact, rtol=1e-4, atol=1e-4 * float(exact[0]))
    eye = torch.eye(min(shape), dtype=torch.float64)
    torch.testing.assert_close(
        found.vectors.double().T @ found.vectors.double(), eye, atol=1e-5, rtol=0
    )
    rebuilt = _projector(found.vectors) @ a.double()
    torch.testing.assert_close(rebuilt, a.double(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(64, 576), (576, 64), (192, 192), (300, 290)])
def test_float32_ranks_equal_the_float64_rule(shape: tuple[int, int], seed: int) -> None:
    a = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.05
    exact = squared_singular_values(a)
    for energy in ENERGIES:
        assert spectrum(a, energy, vectors=False).rank == energy_rank(exact, energy)
        assert spectrum(a, energy).rank == energy_rank(exact, energy)


def test_a_tie_at_the_threshold_is_decided_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    a = torch.randn(48, 300, generator=torch.Generator().manual_seed(3))
    exact = squared_singular_values(a)
    fractions = torch.cumsum(exact, 0) / exact.sum()
    calls = []
    original = basis.squared_singular_values
    monkeypatch.setattr(basis, "squared_singular_values", lambda m: calls.append(1) or original(m))
    for r in (5, 20, 40):
        tie = float(fractions[r - 1])  # not strictly above: the exact rule keeps r + 1
        for energy in (tie, torch.nextafter(torch.tensor(tie), torch.tensor(0.0)).item()):
            assert spectrum(a, energy).rank == energy_rank(exact, energy)
    assert len(calls) == 6
    calls.clear()
    middle = float(fractions[9] + fractions[10]) / 2  # far from every threshold
    assert spectrum(a, middle).rank == 11
    assert calls == []


def test_truncated_svd_in_float32_keeps_the_float64_subspace_and_error() -> None:
    s = torch.cat([torch.linspace(10, 5, 20), torch.linspace(0.5, 0.1, 60)]).double()
    w = _with_spectrum(80, 300, s, seed=4)
    fast = truncated_svd(w, energy=0.95)
    exact = truncated_svd(w.double(), energy=0.95)
    assert fast.rank == exact.rank
    assert fast.first.dtype == torch.float32
    torch.testing.assert_close(_projector(fast.second), _projector(exact.second), atol=1e-5, rtol=0)
    assert fast.rel_error == pytest.approx(exact.rel_error, rel=1e-4)
    error = torch.linalg.norm((fast.second @ fast.first).double() - w.double())
    assert float(error / torch.linalg.norm(w.double())) == pytest.approx(exact.rel_error, rel=1e-4)


def test_tall_truncated_svd_in_float32_matches_float64() -> None:
    s = torch.cat([torch.linspace(8, 4, 10), torch.linspace(0.3, 0.1, 30)]).double()
    w = _with_spectrum(500, 40, s, seed=5)
    fast, exact = truncated_svd(w, energy=0.9), truncated_svd(w.double(), energy=0.9)
    assert fast.rank == exact.rank
    torch.testing.assert_close(
        (fast.second @ fast.first).double(), exact.second @ exact.first, atol=1e-5, rtol=0
    )


# Seed 0 of the two smaller kernels by default; the other seeds and the 96x96 kernel (which
# takes the longest) with -m slow.
RANK_CASES = [
    pytest.param(shape, seed, marks=[pytest.mark.slow] if seed or shape[0] == 96 else [])
    for shape in [(64, 32, 3, 3), (96, 96, 3, 3), (48, 64, 5, 3)]
    for seed in range(3)
]


@pytest.mark.parametrize(("shape", "seed"), RANK_CASES)
def test_ht2_in_float32_has_the_float64_ranks(shape: tuple[int, ...], seed: int) -> None:
    kernel = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.1
    for energy in ENERGIES:
        fast = ht2_decompose(kernel, energy=energy)
        assert fast.ranks == ht2_ranks(kernel, energy) == ht2_ranks(kernel.double(), energy)


def test_ht2_in_float32_keeps_the_float64_subspaces_and_error() -> None:
    generator = torch.Generator().manual_seed(6)
    low = torch.einsum(
        "ca,ahk,kbw,tb->tchw",
        torch.randn(40, 6, generator=generator),
        torch.randn(6, 3, 8, generator=generator),
        torch.randn(8, 5, 3, generator=generator),
        torch.randn(48, 5, generator=generator),
    )
    kernel = low + 0.01 * torch.randn(48, 40, 3, 3, generator=generator)
    fast, exact = ht2_decompose(kernel, energy=0.97), ht2_decompose(kernel.double(), energy=0.97)
    assert fast.ranks == exact.ranks
    assert fast.u1.dtype == torch.float32
    for f, e in ((fast.u1, exact.u1), (fast.u3, exact.u3)):
        torch.testing.assert_close(_projector(f), _projector(e), atol=1e-4, rtol=0)
    assert fast.rel_error == pytest.approx(exact.rel_error, rel=1e-3)


def test_ht2_error_measured_directly_when_small() -> None:
    kernel = torch.randn(16, 12, 3, 3, dtype=torch.float64)
    factors = ht2_decompose(kernel, energy=1.0)
    assert factors.rel_error < 1e-12


def test_tucker2_in_float32_has_the_float64_ranks() -> None:
    kernel = torch.randn(64, 48, 3, 3, generator=torch.Generator().manual_seed(7))
    for energy in ENERGIES:
        fast = tucker2_decompose(kernel, energy=energy)
        exact = tucker2_decompose(kernel.double(), energy=energy)
        assert fast.ranks == exact.ranks
        assert fast.rel_error == pytest.approx(exact.rel_error, rel=1e-4)


def test_lowered_float32_matmuls_make_the_work_float64() -> None:
    before = torch.get_float32_matmul_precision()
    try:
        assert working_dtype(torch.ones(1)) == torch.float32
        torch.set_float32_matmul_precision("high")
        assert working_dtype(torch.ones(1)) == torch.float64
    finally:
        torch.set_float32_matmul_precision(before)
    assert working_dtype(torch.ones(1, dtype=torch.float64)) == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decomposition_stays_on_the_gpu_with_the_cpu_ranks() -> None:
    kernel = torch.randn(64, 48, 3, 3, generator=torch.Generator().manual_seed(8))
    linear = torch.randn(300, 700, generator=torch.Generator().manual_seed(9))
    on_gpu = ht2_decompose(kernel.cuda(), energy=0.9)
    assert on_gpu.u1.device.type == "cuda" and on_gpu.g2.device.type == "cuda"
    assert on_gpu.ranks == ht2_decompose(kernel, energy=0.9).ranks
    factors = truncated_svd(linear.cuda(), energy=0.9)
    assert factors.first.device.type == "cuda"
    assert factors.rank == truncated_svd(linear, energy=0.9).rank
