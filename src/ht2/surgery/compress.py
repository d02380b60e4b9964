"""Compress any nn.Module: walk it by qualified name, decide per layer, swap in factors."""

from __future__ import annotations

import time

import torch
from torch import nn
from tqdm.auto import tqdm

from ht2.decomp import check_energy
from ht2.errors import HT2Error
from ht2.layers import FactorizedLayer, factorize
from ht2.metrics import count_params, layer_macs, macs_under
from ht2.metrics.observe import observe
from ht2.surgery.policy import METHODS, Decision, is_candidate, matches, paper_policy
from ht2.surgery.report import CompressionReport, LayerReport


def candidate_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and Linear layers by qualified name, skipping the insides of factorized modules."""
    found: list[tuple[str, nn.Module]] = []
    factorized: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in factorized):
            continue
        if isinstance(module, FactorizedLayer):
            factorized.append(name)
        elif is_candidate(module):
            found.append((name, module))
    return found


def first_conv_name(model: nn.Module, example_input: torch.Tensor | None) -> str | None:
    """The first Conv2d that sees the input: by execution order when an input is given."""
    convs = {module: name for name, module in model.named_modules() if type(module) is nn.Conv2d}
    if example_input is None:
        return next(iter(convs.values()), None)
    order: list[str] = []
    observe(model, example_input, [(m, lambda m, i, o: order.append(convs[m])) for m in convs])
    return order[0] if order else None


def _model_name(model: nn.Module) -> str:
    arch = getattr(model, "ht2_arch", None)
    return arch["name"] if isinstance(arch, dict) else type(model).__name__


def compress(
    model: nn.Module,
    energy: float = 0.9,
    method: str = "ht2",
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    example_input: torch.Tensor | None = None,
    keep_if_larger: bool = True,
    progress: bool = False,
) -> CompressionReport:
    """Replace, in place, the layers of `model` chosen by the paper's policy by their factors.

    First conv and 1x1 convs get SVD (Tucker-1), other k x k convs `method` (HT-2 by default;
    "tucker2", "cp", or "svd" for spatial SVD), Linear layers SVD; ranks by the energy rule.
    Globs in `include`/`exclude` pick layers by name.
    With `keep_if_larger`, a layer whose factors would not be smaller stays dense.
    `example_input` (batch 1) finds the first conv by execution order and enables MAC counts.
    """
    try:
        energy = check_energy(energy)
    except ValueError as error:
        raise HT2Error(str(error)) from None
    if method not in METHODS:
        raise HT2Error(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    start = time.perf_counter()
    first = first_conv_name(model, example_input)
    macs_before = layer_macs(model, example_input) if example_input is not None else None
    params_before = count_params(model)

    layers = candidate_layers(model)
    decisions: list[Decision] = []
    for name, module in layers:
        reason = matches(name, include, exclude)
        decision = Decision(None, reason) if reason else paper_policy(module, name == first, method)
        decisions.append(decision)
    if not any(decision.method for decision in decisions):
        reasons = sorted({d.reason for d in decisions}) or ["it has no Conv2d or Linear layer"]
        raise HT2Error(f"no layer to compress in {_model_name(model)}: {'; '.join(reasons)}")

    reports = []
    work = tqdm(
        list(zip(layers, decisions, strict=True)),
        desc="decomposing",
        unit="layer",
        disable=None if progress else True,  # None: off when not a terminal
        leave=False,
    )
    for (name, module), decision in work:
        work.set_postfix_str(name, refresh=False)
        report = LayerReport(
            name=name,
            type=type(module).__name__,
            method="dense",
            params_before=count_params(module),
            params_after=count_params(module),
            reason=decision.reason,
        )
        if decision.method is not None:
            factorized = factorize(module, decision.method, energy=energy)
            size = count_params(factorized)
            if keep_if_larger and size >= report.params_before:
                report.reason = (
                    f"factors would have {size:,} parameters, not fewer than "
                    f"{report.params_before:,}"
                )
            else:
                model.set_submodule(name, factorized)
                report.method = decision.method
                report.ranks = dict(factorized.ranks)
                report.params_after = size
                report.rel_error = factorized.rel_error
        reports.append(report)

    macs_after = layer_macs(model, example_input) if example_input is not None else None
    if macs_before is not None and macs_after is not None:
        for report in reports:
            report.macs_before = macs_under(macs_before, report.name)
            report.macs_after = macs_under(macs_after, report.name)
    return CompressionReport(
        model=_model_name(model),
        method=method,
        energy=energy,
        keep_if_larger=keep_if_larger,
        params_before=params_before,
        params_after=count_params(model),
        macs_before=sum(macs_before.values()) if macs_before is not None else None,
        macs_after=sum(macs_after.values()) if macs_after is not None else None,
        seconds=time.perf_counter() - start,
        layers=reports,
    )
