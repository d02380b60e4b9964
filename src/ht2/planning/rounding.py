"""`round_ranks="auto"`: measure which rank multiple the target's kernels run fastest.

Kernels (oneDNN's AVX-512 and AMX tiles, GPU tensor cores) work in blocks of channels, so a
rank just past a block boundary can cost as much as the next full block. Each planned layer is
built at its ranks rounded up to every candidate multiple (random weights: time does not
depend on values) and timed where the model will run; the multiple whose layers take least
time in all wins, the smaller on a near tie, since rounding up costs parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ht2.device import resolve_device
from ht2.errors import HT2Error
from ht2.layers.builders import build_factorized
from ht2.metrics.treatment import inner_input, time_in_turn
from ht2.surgery.latency_aware import FormTiming
from ht2.surgery.plan_model import Plan
from ht2.surgery.ranking import round_up
from ht2.surgery.walk import input_shapes

MULTIPLES = (1, 4, 8, 16, 32)
NEAR_TIE = 0.02  # a larger multiple must be this much faster to be worth its parameters


@dataclass(frozen=True)
class AutoRounding:
    """round_ranks="auto" with where to time the layers (None: where latency forms are timed,
    else a FormTiming's defaults: CPU, batch 1, float32 eager)."""

    timing: FormTiming | None = None


def is_auto(round_ranks: Any) -> bool:
    """Whether a round_ranks value asks for the multiple to be measured."""
    return isinstance(round_ranks, AutoRounding) or round_ranks == "auto"


@dataclass(frozen=True)
class RoundingChoice:
    """The multiple chosen and the summed median ms of the planned layers at each."""

    multiple: int
    layers_ms: dict[int, float]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.multiple,
            "layers_ms": {str(m): ms for m, ms in self.layers_ms.items()},
            **self.settings,
        }


def _layer_at(entry: Any, multiple: int, shape: torch.Size) -> nn.Module:
    """The planned layer rebuilt at ranks rounded up to `multiple`, in its planned form."""
    ranks = round_up(entry.method, dict(entry.ranks), multiple, shape)
    layer = build_factorized({"method": entry.method, "ranks": ranks, "layer": entry.layer})
    return layer.in_form(entry.form) if entry.form not in (None, layer.form) else layer


def choose_round_ranks(
    model: nn.Module,
    plan: Plan,
    example_input: torch.Tensor,
    timing: FormTiming | None = None,
    multiples: tuple[int, ...] = MULTIPLES,
) -> RoundingChoice:
    """The rank multiple under which `plan`'s layers (planned without rounding) run fastest
    under `timing`; `model` is only read for the layers' input shapes."""
    if not plan.layers:
        raise HT2Error("round_ranks auto times the planned layers, and this plan has none")
    timing = timing or FormTiming()
    target = resolve_device(timing.device)
    modules = {entry.name: model.get_submodule(entry.name) for entry in plan.layers}
    shapes = input_shapes(model, example_input, list(modules.values()))
    totals = dict.fromkeys(multiples, 0.0)
    for entry in plan.layers:
        module = modules[entry.name]
        if module not in shapes:
            continue
        x = inner_input((timing.batch_size, *shapes[module][1:]), timing.treatment, target)
        layers = [_layer_at(entry, m, module.weight.shape) for m in multiples]
        names = [f"{entry.name} at ranks rounded to {m}" for m in multiples]
        times = time_in_turn(
            layers, x, timing.treatment, names, timing.threads, timing.repeats, timing.warmup
        )
        for multiple, ms in zip(multiples, times, strict=True):
            totals[multiple] += ms
    chosen = multiples[0]
    for multiple in multiples[1:]:
        if totals[multiple] < totals[chosen] * (1 - NEAR_TIE):
            chosen = multiple
    settings = {"device": timing.device, "batch_size": timing.batch_size}
    settings.update({k: v for k, v in timing.treatment.to_dict().items() if k != "fold_bn"})
    return RoundingChoice(chosen, totals, settings)
