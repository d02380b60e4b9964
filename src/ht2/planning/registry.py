"""Planners in one registry: each turns a model (and its options) into a Plan.

A planner is a function `(model, example_input, options, **inputs) -> Plan`; adding one is a
module with that function and one `register_planner` line. Rank rules (energy, VBMF) and ranks
given per layer are options of the base planner; size targets, spectrum and sensitivity
allocation decide per-layer energies or ranks first, then plan with them; "forms" plans, then
times each layer's equivalent forms and records the fastest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.planning.options import CompressOptions
from ht2.planning.planner import plan
from ht2.surgery.plan_model import Plan

Planner = Callable[..., Plan]
PLANNERS: dict[str, Planner] = {}


def register_planner(name: str, planner: Planner) -> None:
    """Make `planner` reachable as `plan_with(name, ...)`; a name is registered once."""
    if name in PLANNERS:
        raise ValueError(f"a planner named {name!r} is registered already")
    PLANNERS[name] = planner


def plan_with(
    name: str,
    model: nn.Module,
    example_input: torch.Tensor | None = None,
    options: CompressOptions | None = None,
    **inputs: Any,
) -> Plan:
    """The Plan the planner `name` makes for `model` (left unchanged)."""
    try:
        planner = PLANNERS[name]
    except KeyError:
        known = ", ".join(sorted(PLANNERS))
        raise HT2Error(f"unknown planner {name!r}; known: {known}") from None
    return planner(model, example_input, options or CompressOptions(), **inputs)


def _energy(model: nn.Module, example_input, options: CompressOptions) -> Plan:
    """The paper's rule: each unfolding keeps `options.energy` of its energy."""
    return plan(model, example_input, replace(options, rank_rule="energy"))


def _vbmf(model: nn.Module, example_input, options: CompressOptions) -> Plan:
    """Empirical variational Bayesian matrix factorisation of each unfolding (Kim et al.)."""
    return plan(model, example_input, replace(options, rank_rule="vbmf"))


def _ranks_file(model: nn.Module, example_input, options: CompressOptions, path: str = "") -> Plan:
    """Per-layer ranks from a ranks file (or a report.json / ht2.json to replay)."""
    from ht2.io.rank_file import read_rank_file

    if not path:
        raise HT2Error("the ranks planner needs path=, a ranks file")
    return plan(model, example_input, replace(options, layer_ranks=read_rank_file(path)))


def _target(model: nn.Module, example_input, options: CompressOptions) -> Plan:
    """One global energy, bisected so that the whole model meets `options.target`."""
    if options.target is None:
        raise HT2Error("the target planner needs options.target, such as Target('params', 4)")
    return plan(model, example_input, options)


def _forms(model: nn.Module, example_input, options: CompressOptions, timing: Any = None) -> Plan:
    """The plan the options make, each layer in its fastest form timed by `timing` (a
    FormTiming; default: CPU, batch 1, float32 eager, the size kept)."""
    from ht2.planning.forms import plan_forms

    return plan_forms(model, plan(model, example_input, options), example_input, timing)


def _allocation(name: str) -> Planner:
    def planner(
        model: nn.Module,
        example_input,
        options: CompressOptions,
        loader: Iterable | None = None,
        images: int = 256,
        sensitivity: Any = None,
    ) -> Plan:
        from ht2.surgery.allocate import allocate

        if options.target is None:
            raise HT2Error(f"the {name} planner shares a size target: give options.target")
        allocation = allocate(
            model,
            options.method,
            options.target,
            name,
            example_input,
            loader,
            images=images,
            include=list(options.include) if options.include else None,
            exclude=list(options.exclude) if options.exclude else None,
            keep_if_larger=options.keep_if_larger,
            round_ranks=options.round_ranks,
            options=sensitivity,
            progress=options.progress,
        )
        chosen = replace(options, target=None, **allocation.compress_kwargs())
        result = plan(model, example_input, chosen)
        result.provenance.update(allocation=name, target=_target_record(allocation))
        return result

    planner.__doc__ = (
        f"Per-layer ranks that meet a size target, allocated by {name} (`sensitivity`: "
        "a SensitivityOptions, how the sensitivity allocation measures)."
    )
    return planner


def _target_record(allocation: Any) -> dict[str, Any]:
    return {"kind": allocation.target.kind, "factor": allocation.target.factor}


register_planner("energy", _energy)
register_planner("vbmf", _vbmf)
register_planner("ranks", _ranks_file)
register_planner("target", _target)
register_planner("forms", _forms)
register_planner("spectrum", _allocation("spectrum"))
register_planner("sensitivity", _allocation("sensitivity"))


def _speed(
    model: nn.Module,
    example_input,
    options: CompressOptions,
    speedup: float = 0.0,
    timing: Any = None,
    energies: Any = None,
) -> Plan:
    """Per-layer ranks and forms of least spectral damage whose model runs `speedup` times
    faster than the original, timed by `timing` (a FormTiming; default: CPU, batch 1, float32
    eager), dense kept where factors are not faster (ht2.planning.speed)."""
    from ht2.planning.speed import SPEED_ENERGIES, plan_for_speedup

    return plan_for_speedup(
        model, example_input, options, speedup, timing, energies or SPEED_ENERGIES
    )


register_planner("speed", _speed)
