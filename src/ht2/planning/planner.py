"""Decide: walk any nn.Module and plan, per layer, its decomposition and ranks.

Planning at an energy has to decompose each layer to read the ranks the rule keeps, so the
factors it computes are kept in the Plan and `ht2.apply` reuses them while the layer and the
plan entry are unchanged: planning then applying costs what compressing always did.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ht2.errors import HT2Error
from ht2.layers import factorize
from ht2.layers.effective import effective_layer
from ht2.metrics import count_params
from ht2.planning.options import CompressOptions
from ht2.surgery.costs import factorized_cost
from ht2.surgery.finite import check_finite, decomposing
from ht2.surgery.plan_model import LayerPlan, Plan, json_layer, model_name
from ht2.surgery.policy import Decision, matches, paper_policy, resolve_method
from ht2.surgery.rank_choice import RankChoice, Ranks, check_layer_ranks
from ht2.surgery.ranking import clip_ranks, has_unfoldings
from ht2.surgery.walk import candidate_layers, first_conv_name


def plan(
    model: nn.Module,
    example_input: torch.Tensor | None = None,
    options: CompressOptions | None = None,
    **overrides: Any,
) -> Plan:
    """The Plan for `model` (left unchanged) under `options` and keyword `overrides` (any
    CompressOptions field, such as energy=0.8 or target=Target("params", 4)).

    The paper's policy picks the layers: first and 1x1 convs SVD (Tucker-1), other k x k convs
    `method`, Linear SVD; `example_input` (batch 1) finds the first conv by execution order.
    """
    options = CompressOptions.of(options, **overrides)
    options.check(example_input is not None)
    method = resolve_method(options.method)
    include = list(options.include) if options.include else None
    exclude = list(options.exclude) if options.exclude else None
    first = first_conv_name(model, example_input)
    layers = candidate_layers(model)
    decisions = [_decide(name, module, first, include, exclude, method) for name, module in layers]
    if not any(decision.method for decision in decisions):
        reasons = sorted({d.reason for d in decisions}) or ["it has no Conv2d or Linear layer"]
        raise HT2Error(f"no layer to compress in {model_name(model)}: {'; '.join(reasons)}")
    chosen = [(n, m, d.method) for (n, m), d in zip(layers, decisions, strict=True) if d.method]
    check_finite(chosen)
    given = check_layer_ranks(options.layer_ranks or {}, layers, decisions)
    choice = RankChoice(
        chosen,
        given,
        options.rank_rule,
        options.energy,
        dict(options.layer_energies or {}),
        options.round_ranks,
    )
    solution = None
    if options.target is not None:
        solution = choice.solve(options.target, model, example_input, options.keep_if_larger)
        choice.energy = solution.energy
    result = Plan(model=model_name(model), method=method)
    work = tqdm(
        list(zip(layers, decisions, strict=True)),
        desc="decomposing",
        unit="layer",
        disable=None if options.progress else True,  # None: off when not a terminal
        leave=False,
    )
    for (name, module), decision in work:
        work.set_postfix_str(name, refresh=False)
        if decision.method is None:
            result.dense[name] = decision.reason
            continue
        _plan_layer(result, name, module, decision.method, choice, options)
    result.provenance = {
        "rank_rule": choice.rule_name,
        "energy": choice.energy if options.rank_rule == "energy" else None,
        "target": solution.to_dict(options.target) if solution is not None else None,
        "round_ranks": options.round_ranks,
        "refine_sweeps": options.refine_sweeps,
        "keep_if_larger": options.keep_if_larger,
        "include": include,
        "exclude": exclude,
        "allocation": "uniform",
        "data": None,
    }
    return result


def _decide(
    name: str,
    module: nn.Module,
    first: str | None,
    include: list[str] | None,
    exclude: list[str] | None,
    method: str,
) -> Decision:
    reason = matches(name, include, exclude)
    return Decision(None, reason) if reason else paper_policy(module, name == first, method)


def _plan_layer(
    result: Plan,
    name: str,
    module: nn.Module,
    method: str,
    choice: RankChoice,
    options: CompressOptions,
) -> None:
    """One layer's entry (or its reason to stay dense), its factors kept for apply."""
    with decomposing(name):
        ranks, energy = choice.ranks_of(name, module, method)
        if options.keep_if_larger:
            reason = _dense_before_factoring(module, method, ranks)
            if reason:
                result.dense[name] = reason
                return
        if ranks is None:
            factors = factorize(module, method, energy=energy, sweeps=options.refine_sweeps)
        else:
            factors = factorize(module, method, ranks=ranks, sweeps=options.refine_sweeps)
    factors.energy = energy
    size, before = count_params(factors), count_params(module)
    if options.keep_if_larger and size >= before:
        result.dense[name] = _larger(size, before)
        return
    layer = LayerPlan(
        name=name,
        method=method,
        ranks=dict(factors.ranks),
        layer=json_layer(factors.spec.to_dict()),
        energy=energy,
        refine_sweeps=options.refine_sweeps,
        unrounded=choice.unrounded.get(name),
    )
    result.layers.append(layer)
    result.remember(layer, module, factors)


def _larger(size: int, before: int) -> str:
    return f"factors would have {size:,} parameters, not fewer than {before:,}"


def _dense_before_factoring(module: nn.Module, method: str, ranks: Ranks | None) -> str | None:
    """The reason to keep `module` dense when its known ranks show that factors would not be
    smaller, found without computing them (a size target's ranks are known before factoring).
    Energy ranks are not read ahead: the singular values alone would cost a replaced layer
    a second pass over its spectrum."""
    if ranks is None or not has_unfoldings(method):
        return None
    layer = effective_layer(module)
    clipped = clip_ranks(method, ranks, layer.dense.weight.shape)
    size, before = factorized_cost(method, layer.spec, clipped)[0], count_params(module)
    return _larger(size, before) if size >= before else None
