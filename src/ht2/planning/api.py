"""`ht2.compress`: plan and apply in one call, for one-liners."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ht2.planning.options import CompressOptions
from ht2.planning.planner import plan
from ht2.surgery.apply import apply
from ht2.surgery.report import CompressionReport


def compress(
    model: nn.Module,
    energy: float = 0.9,
    method: str = "ht2",
    example_input: torch.Tensor | None = None,
    options: CompressOptions | None = None,
    **overrides: Any,
) -> CompressionReport:
    """Replace, in place, the layers of `model` chosen by the paper's policy by their factors:
    `ht2.apply(model, ht2.plan(model, ...))`. Options are CompressOptions fields (as
    `options` or keywords): first and 1x1 convs get SVD (Tucker-1), other k x k convs `method`
    (HT-2 by default; tucker2, cp, spatial-svd), Linear layers SVD, ranks by the energy rule
    at `energy` unless rank_rule, layer_ranks, layer_energies or target say otherwise.
    `example_input` (batch 1) finds the first conv by execution order and enables MAC counts.
    """
    start = time.perf_counter()
    options = CompressOptions.of(options, energy=energy, method=method, **overrides)
    decided = plan(model, example_input, options)
    report = apply(model, decided, example_input=example_input)
    report.seconds = time.perf_counter() - start
    return report
