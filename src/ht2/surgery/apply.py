"""Do: carry out a Plan on a model exactly, swapping each planned layer for its factors."""

from __future__ import annotations

import time
from typing import Protocol

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.layers import factorize, spec_from_dict
from ht2.metrics import count_params, layer_macs, macs_under
from ht2.surgery.costs import factorized_cost
from ht2.surgery.finite import check_finite, decomposing
from ht2.surgery.plan import _spec_of
from ht2.surgery.plan_model import LayerPlan, Plan, model_name
from ht2.surgery.report import CompressionReport, LayerReport
from ht2.surgery.walk import candidate_layers


class Fit(Protocol):
    """A fitting step for apply: factors fitted otherwise than by the plain decomposition
    (ht2.dataaware.DataAwareFit fits them to the original layers' outputs on images)."""

    def __call__(
        self,
        model: nn.Module,
        plan: Plan,
        example_input: torch.Tensor | None = None,
        progress: bool = False,
    ) -> CompressionReport: ...


def apply(
    model: nn.Module,
    plan: Plan,
    fit: Fit | None = None,
    example_input: torch.Tensor | None = None,
    progress: bool = False,
) -> CompressionReport:
    """Replace, in place, each layer `plan` names by its factors, and report what changed.

    The plan is checked against the model first (every layer present, with the planned
    shape), so a plan for another model changes nothing. `fit` replaces the plain factors
    by fitted ones (a plan whose layers ask for a data-aware fit needs one).
    `example_input` (batch 1) enables MAC counts.
    """
    if fit is not None:
        return fit(model, plan, example_input=example_input, progress=progress)
    wanting = [layer.name for layer in plan.layers if layer.fit != "plain"]
    if wanting:
        raise HT2Error(
            f"the plan asks for a data-aware fit of {len(wanting)} layer(s), such as "
            f"{wanting[0]!r}; pass fit=ht2.dataaware.DataAwareFit(images) or set their fit "
            "to plain"
        )
    start = time.perf_counter()
    layers = dict(candidate_layers(model))
    check_fits(model, plan, layers)
    check_finite([(layer.name, layers[layer.name], layer.method) for layer in plan.layers])
    macs_before = layer_macs(model, example_input) if example_input is not None else None
    params_before = count_params(model)
    planned = {layer.name: layer for layer in plan.layers}
    reports = []
    for name, module in layers.items():
        size = count_params(module)
        report = LayerReport(
            name=name,
            type=type(module).__name__,
            method="dense",
            params_before=size,
            params_after=size,
            reason=plan.dense.get(name, "" if name in planned else "not in the plan"),
        )
        layer = planned.get(name)
        if layer is not None:
            factors = plan.recall(layer, module) or _factorize(module, layer)
            factors = in_planned_form(factors, layer)
            model.set_submodule(name, factors)
            report.method = layer.method
            report.ranks = dict(layer.ranks)
            report.params_after = count_params(factors)
            report.rel_error = getattr(factors, "rel_error", None)
            report.energy = layer.energy
            report.form = layer.form
        reports.append(report)
    macs_after = layer_macs(model, example_input) if example_input is not None else None
    if macs_before is not None and macs_after is not None:
        for report in reports:
            report.macs_before = macs_under(macs_before, report.name)
            report.macs_after = macs_under(macs_after, report.name)
    provenance = plan.provenance
    round_ranks = int(provenance.get("round_ranks", 1))
    return CompressionReport(
        model=plan.model,
        method=plan.method,
        energy=provenance.get("energy"),
        keep_if_larger=bool(provenance.get("keep_if_larger", True)),
        params_before=params_before,
        params_after=count_params(model),
        macs_before=sum(macs_before.values()) if macs_before is not None else None,
        macs_after=sum(macs_after.values()) if macs_after is not None else None,
        seconds=time.perf_counter() - start,
        layers=reports,
        rank_rule=provenance.get("rank_rule", "file"),
        round_ranks=round_ranks,
        target=provenance.get("target"),
        rounding_params=rounding_cost(model, plan) if round_ranks > 1 else None,
        refine_sweeps=int(provenance.get("refine_sweeps", 0)),
        provenance=dict(provenance),
    )


def check_fits(model: nn.Module, plan: Plan, layers: dict[str, nn.Module]) -> None:
    """HT2Error when the plan was made for another model, or naming the first plan entry the
    model has no matching layer for."""
    if plan.model != model_name(model):
        raise HT2Error(
            f"the plan was made for {plan.model}, not {model_name(model)}; make one for this "
            "model (ht2 compress --plan-only)"
        )
    for index, layer in enumerate(plan.layers):
        if layer.name not in layers:
            where = "does not have" if _missing(model, layer.name) else "cannot factorize"
            raise HT2Error(
                f"plan entry {index} names layer {layer.name!r}, which the "
                f"{type(model).__name__} model {where}"
            )
        found = _spec_of(layers[layer.name])
        expected = spec_from_dict(layer.layer)
        if found != expected:
            raise HT2Error(
                f"plan entry {index} does not fit the model at {layer.name!r}: planned "
                f"{expected}, found {type(layers[layer.name]).__name__} {found or ''}".rstrip()
            )


def _missing(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return True
    return False


def _factorize(module: nn.Module, layer: LayerPlan) -> nn.Module:
    """The factors of `module` at the plan's ranks, running in the planned form."""
    with decomposing(layer.name):
        factors = factorize(module, layer.method, ranks=layer.ranks, sweeps=layer.refine_sweeps)
    factors.energy = layer.energy
    return factors


def in_planned_form(factors: nn.Module, layer: LayerPlan) -> nn.Module:
    """`factors` running in the form `layer` plans (as they are when it plans none)."""
    if layer.form is None or layer.form == getattr(factors, "form", layer.form):
        return factors
    return factors.in_form(layer.form)


def rounding_cost(model: nn.Module, plan: Plan) -> int:
    """Parameters that rounding ranks up added to the layers it changed."""
    extra = 0
    for layer in plan.layers:
        if layer.unrounded is None or any(
            layer.ranks.get(key, 0) < value for key, value in layer.unrounded.items()
        ):
            continue  # not rounded, or edited below what rounding gave
        module = model.get_submodule(layer.name)
        if getattr(module, "ranks", None) is None:
            continue
        unrounded = factorized_cost(module.method, module.spec, layer.unrounded)[0]
        extra += count_params(module) - unrounded
    return extra
