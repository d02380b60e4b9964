"""Speedup rows: times of a model (and its baseline), the speedup, the MAC reduction and how
much of it was realized, and the fastest pairs of a treatment matrix.

Rows are JSON-ready dicts, as `ht2 benchmark --json` prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ht2.metrics.counting import layer_macs
from ht2.metrics.latency import LayerTiming, Timing
from ht2.metrics.treatment import Treatment


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with a zero denominator read as a tiny positive one."""
    return numerator / max(denominator, 1e-12)


def total_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Analytic Conv/Linear MACs of one sample."""
    return sum(layer_macs(model, torch.zeros(1, *input_size)).values())


def pair_row(
    size: int,
    treatments: tuple[Treatment, Treatment | None],
    timings: Sequence[Timing],
    macs: Sequence[int],
) -> dict[str, Any]:
    """One batch size under one treatment: MODEL's times and, with a baseline (a second
    treatment, timing and MAC count), its times, the speedup, the MAC reduction and the
    realized share of it (speedup / MAC reduction)."""
    row: dict[str, Any] = {
        "batch_size": size,
        "latency_ms": timings[0].median_ms,
        "latency_iqr_ms": timings[0].iqr_ms,
    }
    ours, theirs = treatments
    if theirs is not None:
        speedup = ratio(timings[1].median_ms, timings[0].median_ms)
        reduction = macs[1] / max(macs[0], 1)
        row.update(
            baseline_latency_ms=timings[1].median_ms,
            baseline_latency_iqr_ms=timings[1].iqr_ms,
            speedup=speedup,
            mac_reduction=reduction,
            realized_over_mac=speedup / reduction,
        )
    row["treatment"] = ours.to_dict()
    if theirs is not None:
        row["baseline_treatment"] = theirs.to_dict()
    return row


def mark_best(
    rows: list[dict[str, Any]], sizes: Sequence[int], against: bool
) -> list[dict[str, Any]]:
    """Per batch size, mark the fastest like-for-like pair (the treatment MODEL runs fastest
    in, the baseline in the same one) and, with a baseline, the best against the best (each
    model in its own fastest treatment); rows get "marks", the summary is returned."""
    best = []
    for size in sizes:
        here = [row for row in rows if row["batch_size"] == size]
        for row in here:
            row["marks"] = []
        fastest = min(here, key=lambda row: row["latency_ms"])
        fastest["marks"].append("fastest like-for-like pair" if against else "fastest")
        entry: dict[str, Any] = {"batch_size": size, "fastest_like_for_like": _pick(fastest)}
        if against:
            theirs = min(here, key=lambda row: row["baseline_latency_ms"])
            theirs["marks"].append("baseline's fastest")
            speedup = ratio(theirs["baseline_latency_ms"], fastest["latency_ms"])
            entry["best_against_best"] = {
                "treatment": fastest["treatment"],
                "baseline_treatment": theirs["treatment"],
                "latency_ms": fastest["latency_ms"],
                "baseline_latency_ms": theirs["baseline_latency_ms"],
                "speedup": speedup,
                "realized_over_mac": speedup / fastest["mac_reduction"],
            }
        best.append(entry)
    return best


def _pick(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("treatment", "latency_ms", "baseline_latency_ms", "speedup", "realized_over_mac")
    return {key: row[key] for key in keys if key in row}


def layer_row(batch_size: int, timing: LayerTiming) -> dict[str, Any]:
    """One factorized layer at one batch size against its dense original."""
    return {
        "batch_size": batch_size,
        "name": timing.name,
        "method": timing.method,
        "ranks": timing.ranks,
        "input_shape": list(timing.input_shape),
        "dense_ms": timing.dense.median_ms,
        "dense_iqr_ms": timing.dense.iqr_ms,
        "factorized_ms": timing.factorized.median_ms,
        "factorized_iqr_ms": timing.factorized.iqr_ms,
        "speedup": timing.speedup,
        "mac_reduction": timing.mac_reduction,
    }
