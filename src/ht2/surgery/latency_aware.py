"""Latency-aware execution forms: time every form of each factorized layer, keep the fastest.

Fewer MACs are not less time when small convolutions are dominated by per-call overhead, so
each layer is timed on the target device, at the batch size, dtype, memory format and runtime
that matter, as each of its equivalent forms (ht2.layers: "four", "merged_core", "merged_in",
...) and left in the fastest. Outputs do not change beyond rounding.

The size asked for is kept: a form is a candidate only when it has no more parameters and
MACs than the layer as decomposed. With `allow_dense` any form may win, "dense" (which costs
what the original layer cost) included, and the report says what that gave back.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ht2.choices import FORM_RUNTIMES
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
)
from ht2.metrics.treatment import Treatment, inner_input, time_in_turn
from ht2.surgery.report import CompressionReport


@dataclass(frozen=True)
class FormChoice:
    """One factorized layer: its form before, the form kept, the median ms of each form
    timed ("dense" costs what the original layer did) and the forms not timed because they
    would exceed the layer's size as decomposed (or are dense, without allow_dense)."""

    name: str
    before: str
    form: str
    times_ms: dict[str, float]
    input_shape: tuple[int, ...]
    over_budget: tuple[str, ...] = ()


def _device_of(layer: nn.Module) -> torch.device:
    return next(layer.parameters()).device


def time_forms(
    layer: FactorizedLayer,
    x: torch.Tensor,
    forms: tuple[str, ...],
    repeats: int = 15,
    warmup: int = 3,
    threads: int | None = None,
    treatment: Treatment | None = None,
) -> dict[str, float]:
    """Median ms of `layer` run in each of `forms` on `x` under `treatment` (dtype, memory
    format, runtime; default float32 NCHW eager), the forms alternating run by run."""
    treatment = treatment or Treatment()
    runs = [layer.in_form(form) for form in forms]
    names = [f"form {form}" for form in forms]
    times = time_in_turn(runs, x, treatment, names, threads, repeats, warmup)
    return dict(zip(forms, times, strict=True))


def size_of(module: nn.Module, one: torch.Tensor) -> tuple[int, int]:
    """Parameters and MACs (on the one-sample input `one`) of a layer in some form."""
    return count_params(module), sum(layer_macs(module, one).values())


def within_budget(
    layer: FactorizedLayer, forms: tuple[str, ...], one: torch.Tensor
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`forms` split into those no larger than `layer` as it is (parameters and MACs on the
    one-sample input `one`) and the others; "dense" is always among the others."""
    limit = size_of(layer, one)
    fits, over = [], []
    for form in forms:
        small = form == layer.form or (
            form != DENSE_FORM
            and all(a <= b for a, b in zip(size_of(layer.in_form(form), one), limit, strict=True))
        )
        (fits if small else over).append(form)
    return tuple(fits), tuple(over)


@dataclass(frozen=True)
class FormChoices:
    """The forms kept per layer, and the whole-model check that picked among the layouts.

    `model_ms` holds the whole-model medians of three layouts: "per_layer" (each layer's
    fastest form), "as_decomposed" (the forms the layers had) and "dense" (every layer dense,
    which costs what the original model did). `kept` names the fastest that may be kept
    ("dense" only with `allow_dense`; without it, "dense" is timed to say how the kept layout
    compares with the original), which `layers` show. Empty `model_ms` and "per_layer" kept
    when the check was off.
    """

    layers: list[FormChoice]
    model_ms: dict[str, float]
    kept: str
    allow_dense: bool = False
    treatment: Treatment = field(default_factory=Treatment)
    batch_size: int = 1
    device: str = "cpu"

    def settings(self) -> dict[str, Any]:
        """How the forms were timed (device, batch, dtype, memory format, runtime, whether
        dense could win) and the layout kept, as reports and plans record them."""
        treatment = self.treatment.to_dict()
        del treatment["fold_bn"]  # forms are always timed with BatchNorms unfolded
        return {
            "allow_dense": self.allow_dense,
            "device": self.device,
            "batch_size": self.batch_size,
            **treatment,
            "kept": self.kept,
        }


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
    timing: dict[str, Any],
    forms: tuple[str, ...] | None,
    allow_dense: bool,
) -> list[FormChoice]:
    shapes = layer_input_shapes(model, example_input)
    choices = []
    for name, layer in factorized_layers(model):
        if name not in shapes:
            continue
        candidates = tuple(f for f in layer.available_forms() if forms is None or f in forms)
        over: tuple[str, ...] = ()
        if not allow_dense:
            one = torch.randn((1, *shapes[name][1:]), dtype=example_input.dtype)
            candidates, over = within_budget(layer, candidates, one)
        candidates = candidates or (layer.form,)
        x = inner_input((batch_size, *shapes[name][1:]), timing["treatment"], target)
        times = time_forms(layer, x, candidates, **timing)
        best = min(candidates, key=times.__getitem__)
        choices.append(FormChoice(name, layer.form, best, times, tuple(x.shape), over))
    if not choices:
        raise HT2Error("no factorized layer runs in this model: compress it first")
    return choices


def _check_model(
    model: nn.Module,
    choices: list[FormChoice],
    x: torch.Tensor,
    timing: dict[str, Any],
) -> dict[str, float]:
    """Whole-model medians (ms) of the layouts of FormChoices, run in turn on `x`."""
    layouts = {
        "per_layer": {c.name: c.form for c in choices},
        "as_decomposed": {},
        "dense": {c.name: DENSE_FORM for c in choices},
    }
    runs = [_with_forms(model, forms) for forms in layouts.values()]
    names = [f"the model laid out {key}" for key in layouts]
    times = time_in_turn(
        runs, x, timing["treatment"], names, timing["threads"], timing["repeats"], timing["warmup"]
    )
    return dict(zip(layouts, times, strict=True))


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
    allow_dense: bool = False,
    treatment: Treatment | None = None,
) -> FormChoices:
    """Put, in place, each factorized layer of `model` in its fastest form; return the choices.

    Each layer is timed on `device` with a random input of the shape it sees when `model` runs
    on `example_input`, its batch dimension set to `batch_size`, under `treatment` (dtype,
    memory format, runtime "eager" or "compile"; default float32 NCHW eager); medians of
    `repeats` alternating runs after `warmup` rounds, with `threads` CPU threads (None: as
    set). Candidates are the forms the layer can take that keep its size as decomposed (no
    more parameters or MACs); with `allow_dense` every form, "dense" included. `forms`
    limits them further (a layer that can take none stays as it is). A layer alone is not
    the layer in the model (caches, allocations), so with `check_model` the whole model is
    then timed with those forms, as decomposed and all dense (the original's cost), and the
    fastest layout is kept, all dense only with `allow_dense`. Only copies visit `device`.
    """
    if batch_size < 1:
        raise HT2Error(f"the batch size must be at least 1, got {batch_size}")
    treatment = treatment or Treatment()
    if treatment.runtime not in FORM_RUNTIMES or treatment.fold_bn:
        raise HT2Error(
            f"forms are timed in {' or '.join(FORM_RUNTIMES)}, BatchNorms unfolded; "
            f"got {treatment.describe()}"
        )
    if forms is not None and DENSE_FORM in forms and not allow_dense:
        raise HT2Error("the dense form gives the size back: it needs allow_dense=True")
    target = resolve_device(str(device))
    timing = {"repeats": repeats, "warmup": warmup, "threads": threads, "treatment": treatment}
    choices = _layer_choices(model, example_input, target, batch_size, timing, forms, allow_dense)
    model_ms: dict[str, float] = {}
    kept = "per_layer"
    if check_model:
        x = torch.randn(
            (batch_size, *example_input.shape[1:]), device=target, dtype=example_input.dtype
        )
        model_ms = _check_model(model, choices, x, timing)
        allowed = [key for key in model_ms if allow_dense or key != "dense"]
        kept = min(allowed, key=model_ms.__getitem__)
    if kept != "per_layer":
        choices = [replace(c, form=DENSE_FORM if kept == "dense" else c.before) for c in choices]
    for choice in choices:
        layer = model.get_submodule(choice.name)
        model.set_submodule(choice.name, layer.in_form(choice.form).to(_device_of(layer)))
    return FormChoices(choices, model_ms, kept, allow_dense, treatment, batch_size, str(target))


def record_forms(
    report: CompressionReport,
    choices: FormChoices,
    model: nn.Module,
    example_input: torch.Tensor | None = None,
) -> CompressionReport:
    """Write each layer's form and form times into `report`, and its sizes after the change;
    `report.latency_aware` says how the forms were timed, which layers went back to dense and
    the sizes before the forms.

    A form changes the parameter count (merged kernels, dense) and the MACs (counted again
    when `example_input` is given), so both are refreshed from `model` as it now is.
    """
    factors = {"params": report.params_after, "macs": report.macs_after}
    reductions = {"params": report.param_reduction, "macs": report.mac_reduction}
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
    report.latency_aware = {
        **choices.settings(),
        "model_ms": dict(choices.model_ms),
        "speedup_vs_dense": _speedup_vs_dense(choices),
        "layers": len(choices.layers),
        "forms": dict(Counter(choice.form for choice in choices.layers)),
        "kept_dense": [c.name for c in choices.layers if c.form == DENSE_FORM],
        "over_budget": {c.name: list(c.over_budget) for c in choices.layers if c.over_budget},
        "params_after_factors": factors["params"],
        "macs_after_factors": factors["macs"],
        "param_reduction_factors": reductions["params"],
        "mac_reduction_factors": reductions["macs"],
    }
    return report


def _speedup_vs_dense(choices: FormChoices) -> float | None:
    """The original's cost (every layer dense) over the kept layout's, in the treatment timed;
    below 1: the compressed model runs slower than the original would."""
    times = choices.model_ms
    if "dense" not in times or choices.kept not in times:
        return None
    return times["dense"] / times[choices.kept]


@dataclass(frozen=True)
class FormTiming:
    """Where and how forms are timed: the device, batch size and CPU threads (None: as set),
    the treatment (dtype, memory format, runtime), whether forms larger than the layer as
    decomposed (dense included) may win, and the timed and warm-up runs per form."""

    device: str = "cpu"
    batch_size: int = 1
    threads: int | None = None
    allow_dense: bool = False
    treatment: Treatment = field(default_factory=Treatment)
    repeats: int = 15
    warmup: int = 3

    def choose(self, model: nn.Module, example_input: torch.Tensor) -> FormChoices:
        """choose_forms on `model` (in place) with these settings."""
        return choose_forms(
            model,
            example_input,
            device=self.device,
            batch_size=self.batch_size,
            threads=self.threads,
            allow_dense=self.allow_dense,
            treatment=self.treatment,
            repeats=self.repeats,
            warmup=self.warmup,
        )


def fastest_forms(
    model: nn.Module,
    report: CompressionReport,
    example_input: torch.Tensor,
    timing: FormTiming | None = None,
) -> FormChoices:
    """Put each factorized layer of the compressed `model` in its fastest form under `timing`
    and record the forms, their times and the sizes after them in `report`."""
    choices = (timing or FormTiming()).choose(model, example_input)
    record_forms(report, choices, model, example_input)
    return choices
