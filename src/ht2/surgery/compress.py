"""Compress any nn.Module: walk it by qualified name, decide per layer, swap in factors."""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ht2.choices import RANK_RULES
from ht2.decomp import check_energy
from ht2.errors import HT2Error
from ht2.layers import factorize
from ht2.metrics import count_params, layer_macs, macs_under
from ht2.surgery.finite import check_finite, decomposing
from ht2.surgery.policy import Decision, matches, paper_policy, resolve_method
from ht2.surgery.rank_choice import RankChoice, check_layer_ranks
from ht2.surgery.report import CompressionReport, LayerReport
from ht2.surgery.targets import Target
from ht2.surgery.walk import candidate_layers, first_conv_name


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
    rank_rule: str = "energy",
    layer_energies: Mapping[str, float] | None = None,
    layer_ranks: Mapping[str, Mapping[str, int]] | None = None,
    round_ranks: int = 1,
    target: Target | None = None,
    refine_sweeps: int = 0,
) -> CompressionReport:
    """Replace, in place, the layers of `model` chosen by the paper's policy by their factors.

    First conv and 1x1 convs get SVD (Tucker-1), other k x k convs `method` (HT-2 by default;
    "tucker2", "cp", or "spatial-svd"), Linear layers SVD. Ranks come from
    `rank_rule` ("energy": the paper's rule at `energy`, or `layer_energies[name]`; "vbmf":
    EVBMF per unfolding), or from `layer_ranks[name]` where given; `target` instead bisects
    one global energy for a whole-model reduction; `round_ranks` rounds ranks up to a multiple.
    `refine_sweeps` rounds of alternating least squares lower the HT-2/Tucker-2 weight error
    at the chosen ranks (0: the paper's one-pass factors). Globs in `include`/`exclude` pick
    layers by name.
    With `keep_if_larger`, a layer whose factors would not be smaller stays dense.
    `example_input` (batch 1) finds the first conv by execution order and enables MAC counts.
    """
    try:
        energy = check_energy(energy)
        for value in (layer_energies or {}).values():
            check_energy(value)
    except ValueError as error:
        raise HT2Error(str(error)) from None
    method = resolve_method(method)
    if rank_rule not in RANK_RULES:
        raise HT2Error(f"unknown rank rule {rank_rule!r}; choose one of {', '.join(RANK_RULES)}")
    if round_ranks < 1:
        raise HT2Error(f"--round-ranks must be a positive integer, got {round_ranks}")
    if refine_sweeps < 0:
        raise HT2Error(f"--refine-sweeps must be 0 or more, got {refine_sweeps}")
    if target is not None and target.kind == "macs" and example_input is None:
        raise HT2Error("a MACs target needs an example input to count MACs")
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

    chosen = [(n, m, d.method) for (n, m), d in zip(layers, decisions, strict=True) if d.method]
    check_finite(chosen)
    given = check_layer_ranks(layer_ranks or {}, layers, decisions)
    choice = RankChoice(chosen, given, rank_rule, energy, dict(layer_energies or {}), round_ranks)
    solution = None
    if target is not None:
        solution = choice.solve(target, model, example_input, keep_if_larger)
        choice.energy = solution.energy

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
            with decomposing(name):
                ranks, layer_energy = choice.ranks_of(name, module, decision.method)
                if ranks is None:
                    factorized = factorize(
                        module, decision.method, energy=layer_energy, sweeps=refine_sweeps
                    )
                else:
                    factorized = factorize(
                        module, decision.method, ranks=ranks, sweeps=refine_sweeps
                    )
            factorized.energy = layer_energy
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
                report.energy = layer_energy
        reports.append(report)

    macs_after = layer_macs(model, example_input) if example_input is not None else None
    if macs_before is not None and macs_after is not None:
        for report in reports:
            report.macs_before = macs_under(macs_before, report.name)
            report.macs_after = macs_under(macs_after, report.name)
    return CompressionReport(
        model=_model_name(model),
        method=method,
        energy=choice.energy if rank_rule == "energy" else None,
        keep_if_larger=keep_if_larger,
        params_before=params_before,
        params_after=count_params(model),
        macs_before=sum(macs_before.values()) if macs_before is not None else None,
        macs_after=sum(macs_after.values()) if macs_after is not None else None,
        seconds=time.perf_counter() - start,
        layers=reports,
        rank_rule=choice.rule_name,
        round_ranks=round_ranks,
        target=solution.to_dict(target) if solution is not None else None,
        rounding_params=choice.rounding_cost(model) if round_ranks > 1 else None,
        refine_sweeps=refine_sweeps,
    )
