"""Speedups as library calls: rows, marks, the treatment matrix and compare_speed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from ht2.metrics import SpeedComparison, Timing, compare_speed, num_threads, treatment_matrix
from ht2.metrics.speedup import mark_best, pair_row, total_macs
from ht2.metrics.treatment import Treatment

CPU = torch.device("cpu")
PLAIN = Treatment()
NHWC = Treatment(channels_last=True)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with num_threads(1):
        yield


def _net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())


def test_pair_row_states_speedup_mac_reduction_and_realized_share() -> None:
    row = pair_row(8, (PLAIN, PLAIN), [Timing((2.0,)), Timing((6.0,))], [10, 40])
    assert row["batch_size"] == 8 and row["latency_ms"] == 2.0
    assert row["baseline_latency_ms"] == 6.0
    assert (row["speedup"], row["mac_reduction"], row["realized_over_mac"]) == (3.0, 4.0, 0.75)
    assert row["treatment"] == row["baseline_treatment"] == PLAIN.to_dict()


def test_pair_row_without_a_baseline_has_no_ratios() -> None:
    row = pair_row(1, (NHWC, None), [Timing((1.0, 3.0))], [10])
    assert row == {
        "batch_size": 1,
        "latency_ms": 2.0,
        "latency_iqr_ms": 1.0,
        "treatment": NHWC.to_dict(),
    }


def test_mark_best_picks_each_sides_fastest_treatment() -> None:
    slow_ours = pair_row(1, (PLAIN, PLAIN), [Timing((4.0,)), Timing((5.0,))], [1, 2])
    fast_ours = pair_row(1, (NHWC, NHWC), [Timing((3.0,)), Timing((9.0,))], [1, 2])
    (best,) = mark_best([slow_ours, fast_ours], [1], against=True)
    assert fast_ours["marks"] == ["fastest like-for-like pair"]
    assert slow_ours["marks"] == ["baseline's fastest"]
    pair = best["best_against_best"]
    assert (pair["treatment"], pair["baseline_treatment"]) == (NHWC.to_dict(), PLAIN.to_dict())
    assert pair["speedup"] == pytest.approx(5.0 / 3.0)
    assert pair["realized_over_mac"] == pytest.approx(5.0 / 3.0 / 2.0)


def test_treatment_matrix_keeps_what_the_choices_allow() -> None:
    chosen, notes = treatment_matrix(CPU, dtype="float32", runtime="eager", folded=True)
    assert chosen == [Treatment(fold_bn=True), Treatment(channels_last=True, fold_bn=True)]
    assert notes == ["BatchNorms folded in every treatment: a model came folded"]
    assert treatment_matrix(CPU, channels_last=True, runtime="onnxruntime") == ([], [])


def test_compare_speed_times_both_sides_alike_in_every_treatment() -> None:
    model, baseline = _net(4), _net(16)
    measured = compare_speed(
        model, baseline, (3, 8, 8), [PLAIN, NHWC], [1, 2], repeats=2, warmup=0, mark=True
    )
    assert isinstance(measured, SpeedComparison)
    assert (measured.macs, measured.baseline_macs) == (
        total_macs(model, (3, 8, 8)),
        total_macs(baseline, (3, 8, 8)),
    )
    assert [(row["batch_size"], row["treatment"]) for row in measured.rows] == [
        (1, PLAIN.to_dict()),
        (1, NHWC.to_dict()),
        (2, PLAIN.to_dict()),
        (2, NHWC.to_dict()),
    ]
    for row in measured.rows:
        assert row["baseline_treatment"] == row["treatment"]
        assert row["mac_reduction"] == measured.baseline_macs / measured.macs
        assert row["realized_over_mac"] == pytest.approx(row["speedup"] / row["mac_reduction"])
    assert [best["batch_size"] for best in measured.best] == [1, 2]
    assert measured.layers == [] and measured.folded == 0


def test_compare_speed_alone_and_with_the_baseline_as_loaded() -> None:
    alone = compare_speed(_net(4), None, (3, 8, 8), [NHWC], [1], repeats=1, warmup=0)
    assert alone.baseline_treatment is None and alone.baseline_macs is None
    assert "speedup" not in alone.rows[0] and alone.best == []
    unmatched = compare_speed(
        _net(4), _net(8), (3, 8, 8), [NHWC], [1], repeats=1, warmup=0, base_treatment=PLAIN
    )
    assert unmatched.treatment == NHWC and unmatched.baseline_treatment == PLAIN
