"""Latency-aware execution forms: time every form of each factorized layer, keep the fastest.

Fewer MACs are not less time when small convolutions are dominated by per-call overhead, so
each layer is timed on the target device, at the batch size that matters, as each of its
equivalent forms (ht2.layers: "four", "merged_core", "merged_in", ... and "dense", which costs
what the original layer cost) and left in the fastest. Outputs do not change beyond rounding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from ht2.device import resolve_device
from ht2.errors import HT2Error
from ht2.layers import FactorizedLayer
from ht2.layers.base import DENSE_FORM
from ht2.metrics import (
    count_params,
    factorized_layers,
    layer_input_shapes,
    layer_macs,
    macs_under,
    time_models,
)
from ht2.surgery.report import CompressionReport


@dataclass(frozen=True)
class FormChoice:
    """One factorized layer: its form before, the form kept and the median ms of each form
    timed ("dense" costs what the original layer did)."""

    name: str
    before: str
    form: str
    times_ms: dict[str, float]
    input_shape: tuple[int, ...]


def _device_of(layer: nn.Module) -> torch.device:
    return next(layer.parameters()).device


def time_forms(
    layer: FactorizedLayer,
    x: torch.Tensor,
    forms: tuple[str, ...],
    repeats: int = 15,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, float]:
    """Median ms of `layer` run in each of `forms` on `x`, the forms alternating run by run."""
    runs = [copy.deepcopy(layer.in_form(form)).to(x.device).eval() for form in forms]
    timings = time_models(runs, x, repeats=repeats, warmup=warmup, threads=threads)
    return {form: timing.median_ms for form, timing in zip(forms, timings, strict=True)}


@dataclass(frozen=True)
class FormChoices:
    """The forms kept per layer, and the whole-model check that picked among the layouts.

    `model_ms` holds the whole-model medians of three layouts: "per_layer" (each layer's
    fastest form), "as_decomposed" (the forms the layers had) and "dense" (every layer dense,
    which costs what the original model did); `kept` names the fastest, which `layers` show.
    Empty `model_ms` and "per_layer" kept when the check was off.
    """

    layers: list[FormChoice]
    model_ms: dict[str, float]
    kept: str


def _with_forms(model: nn.Module, forms: dict[str, str]) -> nn.Module:
    """A copy of `model` with each named factorized layer in the given form."""
    changed = copy.deepcopy(model)
    for name, form in forms.items():
        changed.set_submodule(name, changed.get_submodule(name).in_form(form))
    return changed


def _layer_choices(
    model: nn.Module,
    example_input: torch.Tensor,
    target: torch.device,
    batch_size: int,
    timing: dict[str, int | None],
    forms: tuple[str, ...] | None,
) -> list[FormChoice]:
    shapes = layer_input_shapes(model, example_input)
    choices = []
    for name, layer in factorized_layers(model):
        if name not in shapes:
            continue
        candidates = tuple(f for f in layer.available_forms() if forms is None or f in forms)
        candidates = candidates or (layer.form,)
        x = torch.randn((batch_size, *shapes[name][1:]), device=target, dtype=example_input.dtype)
        times = time_forms(layer, x, candidates, **timing)
        best = min(candidates, key=times.__getitem__)
        choices.append(FormChoice(name, layer.form, best, times, tuple(x.shape)))
    if not choices:
        raise HT2Error("no factorized layer runs in this model: compress it first")
    return choices


def _check_model(
    model: nn.Module,
    choices: list[FormChoice],
    x: torch.Tensor,
    timing: dict[str, int | None],
) -> dict[str, float]:
    """Whole-model medians (ms) of the three layouts of FormChoices, run in turn on `x`."""
    layouts = {
        "per_layer": {c.name: c.form for c in choices},
        "as_decomposed": {},
        "dense": {c.name: DENSE_FORM for c in choices},
    }
    runs = [_with_forms(model, forms).to(x.device).eval() for forms in layouts.values()]
    timings = time_models(runs, x, **timing)
    return {key: t.median_ms for key, t in zip(layouts, timings, strict=True)}


def choose_forms(
    model: nn.Module,
    example_input: torch.Tensor,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    threads: int | None = None,
    repeats: int = 15,
    warmup: int = 3,
    forms: tuple[str, ...] | None = None,
    check_model: bool = True,
) -> FormChoices:
    """Put, in place, each factorized layer of `model` in its fastest form; return the choices.

    Each layer is timed on `device` with a random input of the shape it sees when `model` runs
    on `example_input`, its batch dimension set to `batch_size`; medians of `repeats`
    alternating runs after `warmup` rounds, with `threads` CPU threads (None: as set).
    `forms` limits the candidates (default: every form the layer can take, dense included;
    a layer that can take none of them stays as it is). A layer alone is not the layer in
    the model (caches, allocations), so with `check_model` the whole model is then timed with
    those forms, as decomposed and all dense, and the fastest of the three layouts is kept:
    never slower than the original within the timing noise. Only copies visit `device`.
    """
    if batch_size < 1:
        raise HT2Error(f"the batch size must be at least 1, got {batch_size}")
    target = resolve_device(str(device))
    timing = {"repeats": repeats, "warmup": warmup, "threads": threads}
    choices = _layer_choices(model, example_input, target, batch_size, timing, forms)
    model_ms: dict[str, float] = {}
    kept = "per_layer"
    if check_model:
        x = torch.randn(
            (batch_size, *example_input.shape[1:]), device=target, dtype=example_input.dtype
        )
        model_ms = _check_model(model, choices, x, timing)
        kept = min(model_ms, key=model_ms.__getitem__)
    if kept != "per_layer":
        choices = [replace(c, form=DENSE_FORM if kept == "dense" else c.before) for c in choices]
    for choice in choices:
        layer = model.get_submodule(choice.name)
        model.set_submodule(choice.name, layer.in_form(choice.form).to(_device_of(layer)))
    return FormChoices(choices, model_ms, kept)


def record_forms(
    report: CompressionReport,
    choices: FormChoices,
    model: nn.Module,
    example_input: torch.Tensor | None = None,
) -> CompressionReport:
    """Write each layer's form and form times into `report`, and its sizes after the change.

    A form changes the parameter count (merged kernels, dense) and the MACs (counted again
    when `example_input` is given), so both are refreshed from `model` as it now is.
    """
    by_name = {choice.name: choice for choice in choices.layers}
    macs = layer_macs(model, example_input) if example_input is not None else None
    for line in report.layers:
        choice = by_name.get(line.name)
        if choice is None:
            continue
        line.form = choice.form
        line.form_times_ms = dict(choice.times_ms)
        line.params_after = count_params(model.get_submodule(line.name))
        if macs is not None and line.macs_after is not None:
            line.macs_after = macs_under(macs, line.name)
    report.params_after = count_params(model)
    if macs is not None and report.macs_after is not None:
        report.macs_after = sum(macs.values())
    if report.target:  # faster forms may trade size for time: say what the target became
        kind = report.target["kind"]
        now = report.param_reduction if kind == "params" else report.mac_reduction
        report.target["reached_after_forms"] = now
    return report
