"""Allocate, compress and annotate in one call: the allocation of ht2.surgery.allocate carried
out by ht2.compress (it sits here, above both)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ht2.planning.api import compress
from ht2.surgery.allocate import allocate
from ht2.surgery.policy import resolve_method
from ht2.surgery.report import CompressionReport
from ht2.surgery.sensitivity import SensitivityOptions
from ht2.surgery.targets import Target


def compress_allocated(
    model: nn.Module,
    method: str = "ht2",
    target: Target | None = None,
    allocation: str = "uniform",
    example_input: torch.Tensor | None = None,
    loader: Iterable | None = None,
    images: int = 256,
    options: SensitivityOptions | None = None,
    cache: dict | None = None,
    **compress_args: Any,
) -> CompressionReport:
    """allocate(), then compress() with its choice, then the allocation noted in the report.

    `compress_args` go to both (include, exclude, keep_if_larger, round_ranks, progress, ...);
    sensitivity measures factors refined by the same `refine_sweeps`.
    """
    method = resolve_method(method)
    sweeps = compress_args.get("refine_sweeps", 0)
    options = replace(options or SensitivityOptions(), sweeps=sweeps)
    shared = {
        key: compress_args[key]
        for key in ("include", "exclude", "keep_if_larger", "round_ranks", "progress")
        if key in compress_args
    }
    chosen = allocate(
        model,
        method,
        target,
        allocation,
        example_input,
        loader,
        images,
        options=options,
        cache=cache,
        **shared,
    )
    kwargs = chosen.compress_kwargs() if target is not None else {}
    report = compress(model, method=method, example_input=example_input, **compress_args, **kwargs)
    chosen.annotate(report)
    return report
