"""Spend a size budget across layers: one energy for all, a pooled spectrum, or measured damage.

    allocation = allocate(model, "ht2", Target("params", 4), "sensitivity", x, loader)
    report = compress(model, method="ht2", example_input=x, **allocation.compress_kwargs())
    allocation.annotate(report)

`ht2.planning.allocated.compress_allocated` does the three steps in one call.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ht2.choices import ALLOCATIONS
from ht2.data.gather import gather_images
from ht2.errors import HT2Error
from ht2.surgery.budget import Ranks, make_budget
from ht2.surgery.finite import check_finite
from ht2.surgery.policy import resolve_method
from ht2.surgery.report import CompressionReport
from ht2.surgery.sensitivity import (
    SensitivityOptions,
    allocate_sensitivity,
    measure,
)
from ht2.surgery.spectrum import allocate_spectrum
from ht2.surgery.targets import TOLERANCE, Target


@dataclass
class Allocation:
    """What an allocator chose: per-layer energies or ranks (uniform: the target itself)."""

    name: str
    target: Target | None
    layer_energies: dict[str, float] = field(default_factory=dict)
    layer_ranks: dict[str, Ranks] = field(default_factory=dict)
    predicted: float | None = None  # the reduction the choice should reach
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def compress_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for compress() that carry out this allocation."""
        if self.name == "uniform":
            return {"target": self.target}
        return {"layer_energies": self.layer_energies, "layer_ranks": self.layer_ranks}

    def annotate(self, report: CompressionReport) -> None:
        """Record the allocation (and, beyond uniform, the target it met) in `report`."""
        if self.target is None:
            return
        record = dict(report.target or {})
        if self.name != "uniform":
            reached = (
                report.param_reduction if self.target.kind == "params" else report.mac_reduction
            )
            met = abs(reached / self.target.factor - 1) <= TOLERANCE
            note = "" if met else f"nearest the {self.name} allocation found is {reached:.2f}x"
            record.update(
                kind=self.target.kind,
                factor=self.target.factor,
                reached=reached,
                met=met,
                note=note,
            )
            report.energy = None  # there is no single energy
        record.update(allocation=self.name, allocation_seconds=self.seconds, **self.details)
        report.target = record


def check_allocation(allocation: str, target: Target | None, has_data: bool) -> None:
    """HT2Error for an unknown allocation, one without a target, or sensitivity without data."""
    if allocation not in ALLOCATIONS:
        raise HT2Error(f"unknown allocation {allocation!r}; choose one of {', '.join(ALLOCATIONS)}")
    if allocation != "uniform" and target is None:
        raise HT2Error(
            f"--allocate {allocation} spends a size budget: give --target-params or --target-macs"
        )
    if allocation == "sensitivity" and not has_data:
        raise HT2Error(
            "--allocate sensitivity measures each layer on calibration images: give --data PATH "
            "(a folder with train/)"
        )


def allocate(
    model: nn.Module,
    method: str,
    target: Target | None,
    allocation: str = "uniform",
    example_input: torch.Tensor | None = None,
    loader: Iterable | None = None,
    images: int = 256,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    keep_if_larger: bool = True,
    round_ranks: int = 1,
    options: SensitivityOptions | None = None,
    progress: bool = False,
    cache: dict | None = None,
) -> Allocation:
    """Choose per-layer energies or ranks that meet `target` (the model is left unchanged).

    "uniform": one energy for all layers, bisected by compress(). "spectrum": one threshold on
    singular values as shares of their unfolding's energy, pooled across layers. "sensitivity":
    each layer's damage to the output measured on `images` images from `loader`, then the
    per-layer energies of least summed damage within the budget. A `cache` dict kept by the
    caller reuses those measurements for further targets on the same model and data.
    """
    method = resolve_method(method)
    check_allocation(allocation, target, loader is not None)
    if allocation == "uniform":
        return Allocation("uniform", target)
    start = time.perf_counter()
    budget = make_budget(
        model, method, target, example_input, include, exclude, keep_if_larger, round_ranks
    )
    check_finite((layer.name, layer.module, layer.method) for layer in budget.layers)
    if len(budget.layers) < 2:
        found = "one layer" if budget.layers else "no layer"
        raise HT2Error(
            f"--allocate {allocation} shares a budget between layers, but {found} is to be "
            "compressed here; use --allocate uniform"
        )
    if allocation == "spectrum":
        ranks, threshold, solution = allocate_spectrum(budget)
        return Allocation(
            "spectrum",
            target,
            layer_ranks=ranks,
            predicted=solution.reached,
            seconds=time.perf_counter() - start,
            details={"threshold": threshold},
        )
    options = options or SensitivityOptions()
    options.check()
    if images < 1:
        raise HT2Error(f"sensitivity needs at least 1 calibration image, not {images}")
    key = (method, target.kind, keep_if_larger, round_ranks, str(include), str(exclude))
    key += (images, options)
    if cache is not None and key in cache:
        batch_size, curves = cache[key]
    else:
        batch = gather_images(loader, images)
        batch_size, curves = len(batch), measure(model, budget, batch, options, progress)
        if cache is not None:
            cache[key] = batch_size, curves
    energies, predicted = allocate_sensitivity(budget, curves)
    details = {
        "calibration_images": batch_size,
        "bn_aware": options.bn_aware,
        "damage": {
            name: [[o.energy, o.cost, o.damage] for o in curve] for name, curve in curves.items()
        },
    }
    return Allocation(
        "sensitivity",
        target,
        layer_energies=energies,
        predicted=predicted,
        seconds=time.perf_counter() - start,
        details=details,
    )
