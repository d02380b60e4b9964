"""Threads per operation size: small decompositions and fits on one thread, large ones on all."""

from __future__ import annotations

import pytest
import torch

from ht2.decomp import ht2_decompose, truncated_svd
from ht2.decomp import threads as threads_module
from ht2.decomp.threads import LARGE_NUMEL, sized_by_first, threads_for
from ht2.metrics.latency import num_threads


def test_a_small_operation_runs_on_one_thread_then_the_setting_returns() -> None:
    with num_threads(2):
        with threads_for(LARGE_NUMEL - 1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2


def test_a_large_operation_keeps_the_threads_set() -> None:
    with num_threads(2), threads_for(LARGE_NUMEL):
        assert torch.get_num_threads() == 2


def test_a_large_operation_inside_a_small_one_stays_on_one_thread() -> None:
    with num_threads(2), threads_for(10), threads_for(LARGE_NUMEL):
        assert torch.get_num_threads() == 1


def test_the_setting_returns_after_an_error() -> None:
    with num_threads(2):
        with pytest.raises(ValueError), threads_for(10):
            raise ValueError("inside")
        assert torch.get_num_threads() == 2


def test_sized_by_first_reads_the_first_argument_given_by_keyword() -> None:
    @sized_by_first
    def threads_inside(matrix: torch.Tensor) -> int:
        return torch.get_num_threads()

    with num_threads(2):
        assert threads_inside(matrix=torch.zeros(3, 3)) == 1


def _eigen_solve_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread count at every symmetric eigen-solve from now on."""
    seen: list[int] = []
    eigh = torch.linalg.eigh

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return eigh(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", recording)
    return seen


def test_a_small_layer_is_decomposed_and_refined_on_one_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _eigen_solve_threads(monkeypatch)
    with num_threads(2):
        ht2_decompose(torch.randn(16, 16, 3, 3), energy=0.9, sweeps=2)
    assert seen and set(seen) == {1}


def test_a_large_layer_is_decomposed_on_the_threads_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads_module, "LARGE_NUMEL", 64)  # the 8 x 16 matrix counts as large
    seen = _eigen_solve_threads(monkeypatch)
    with num_threads(2):
        truncated_svd(torch.randn(8, 16), energy=0.9)
    assert seen and set(seen) == {2}


def test_the_factors_are_those_of_a_decomposition_on_the_threads_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernel = torch.randn(32, 24, 3, 3)
    with num_threads(2):
        sized = ht2_decompose(kernel, energy=0.8, sweeps=3)
        monkeypatch.setattr(threads_module, "LARGE_NUMEL", 1)  # everything on two threads
        threaded = ht2_decompose(kernel, energy=0.8, sweeps=3)
    assert sized.ranks == threaded.ranks
    assert sized.rel_error == pytest.approx(threaded.rel_error, rel=1e-5)
    for a, b in zip(
        (sized.u1, sized.g1, sized.g2, sized.u3),
        (threaded.u1, threaded.g1, threaded.g2, threaded.u3),
        strict=True,
    ):
        # each ALS sweep carries the other thread count's float32 rounding forward: about
        # 1e-4 after three here, where a different decomposition would differ by O(1)
        torch.testing.assert_close(a, b, rtol=1e-3, atol=5e-4)
