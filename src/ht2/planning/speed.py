"""Plan for a speed target: per-layer ranks and forms chosen from latencies measured on the target.

Fewer MACs are not less time, so this planner spends a time budget, not a size budget. Every
layer the paper's policy replaces is timed where the model will run (a FormTiming: device,
batch size, dtype, memory format, runtime), dense and at the ranks of a grid of energies, each
in its fastest form. A knapsack keeps, per layer, the option of least spectral damage whose
summed time fits what the whole model may take; the whole model is then timed against the
original, and where layers timed alone mispredicted it, the budget is corrected and the
choice made again.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ht2.choices import FORM_RUNTIMES
from ht2.decomp import check_energy
from ht2.device import resolve_device
from ht2.errors import HT2Error
from ht2.layers import effective_weight
from ht2.layers.base import DENSE_FORM
from ht2.layers.builders import build_factorized
from ht2.metrics import count_params
from ht2.metrics.treatment import Treatment, check_treatment, inner_input, time_in_turn
from ht2.planning.options import CompressOptions
from ht2.planning.planner import plan
from ht2.surgery.apply import apply
from ht2.surgery.budget import replaced_layers
from ht2.surgery.knapsack import Option, cheapest_total, choose
from ht2.surgery.latency_aware import FormTiming
from ht2.surgery.plan_model import Plan, json_layer
from ht2.surgery.ranking import LayerRanker, round_up
from ht2.surgery.targets import TOLERANCE
from ht2.surgery.walk import input_shapes, spec_of

SPEED_ENERGIES = (0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95)  # low ones for flat (untrained) spectra
KEPT_DENSE = "kept dense: for the speed target, none of its factors paid for their time here"


def energy_grid(min_energy: float | None = None) -> tuple[float, ...]:
    """The energies a layer is timed at: SPEED_ENERGIES, none below `min_energy` (which is
    itself one of them), so that speed is not bought with layers that keep almost nothing."""
    if min_energy is None:
        return SPEED_ENERGIES
    try:
        check_energy(min_energy)
    except (TypeError, ValueError):
        raise HT2Error(
            f"min_energy must be in (0, 1], got {min_energy!r}", params="min_energy"
        ) from None
    return tuple(sorted({min_energy, *(e for e in SPEED_ENERGIES if e >= min_energy)}))


@dataclass(frozen=True)
class SpeedOption:
    """One way to run a layer: dense (energy and ranks None) or factors at `ranks` in `form`,
    its median ms on the target and its spectral damage (0 when dense)."""

    energy: float | None
    ranks: dict[str, int] | None
    form: str
    ms: float
    damage: float

    @property
    def dense(self) -> bool:
        return self.ranks is None


@dataclass
class SpeedLayer:
    """A replaced layer's options, cheapest in damage (dense) first."""

    name: str
    method: str
    options: list[SpeedOption]


@dataclass
class SpeedRound:
    """One choice and the whole model timed with it: the model's ms planned and dense."""

    capacity_ms: float
    predicted_ms: float
    planned_ms: float
    dense_ms: float
    damage: float
    chosen: list[int] = field(repr=False)

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.planned_ms


def spectral_damage(ranker: LayerRanker, ranks: dict[str, int]) -> float:
    """The share of each unfolding's energy `ranks` leave out, summed (a bound on the squared
    relative weight error); CP: its squared relative fit error at that rank."""
    if not ranker.spectra:
        return float(ranker.facts.fit_error(ranker.weight, ranks["r"]) ** 2)
    damage = 0.0
    for key, s2 in ranker.spectra.items():
        total = float(s2.sum())
        if total > 0:
            damage += 1.0 - float(s2[: ranks[key]].sum()) / total
    return max(damage, 0.0)


def _rank_grid(
    ranker: LayerRanker, method: str, module: nn.Module, energies, round_ranks: int
) -> dict[tuple, tuple[float, dict[str, int]]]:
    """Distinct rank sets of the energy grid (rounded as the plan would), each with the
    lowest energy that gives it."""
    grid: dict[tuple, tuple[float, dict[str, int]]] = {}
    for energy in sorted(energies):
        ranks = round_up(method, ranker.at_energy(energy), round_ranks, module.weight.shape)
        grid.setdefault(tuple(sorted(ranks.items())), (energy, ranks))
    return grid


def layer_options(
    module: nn.Module,
    method: str,
    input_shape: tuple[int, ...],
    timing: FormTiming,
    energies=SPEED_ENERGIES,
    round_ranks: int = 1,
    keep_if_larger: bool = True,
) -> list[SpeedOption]:
    """`module` dense and at each energy's ranks in each form, timed in turn on a random input
    of `input_shape` (batch set to timing.batch_size) under timing.treatment; per rank set the
    fastest form is kept. Factors no smaller than the layer are skipped with keep_if_larger."""
    target = resolve_device(timing.device)
    treatment = layer_treatment(timing)
    ranker = LayerRanker(method, effective_weight(module).float())
    spec = json_layer(spec_of(module).to_dict())
    runs: list[nn.Module] = [copy.deepcopy(module)]
    labels: list[tuple[float | None, dict[str, int] | None, str]] = [(None, None, DENSE_FORM)]
    for energy, ranks in _rank_grid(ranker, method, module, energies, round_ranks).values():
        layer = build_factorized({"method": method, "ranks": ranks, "layer": spec})
        if keep_if_larger and count_params(layer) >= count_params(module):
            continue
        for form in layer.available_forms():
            if form != DENSE_FORM:
                runs.append(layer.in_form(form))
                labels.append((energy, ranks, form))
    x = inner_input((timing.batch_size, *input_shape[1:]), treatment, target)
    names = [f"{form} ({ranks or 'dense'})" for _, ranks, form in labels]
    times = time_in_turn(runs, x, treatment, names, timing.threads, timing.repeats, timing.warmup)
    fastest: dict[tuple, SpeedOption] = {}
    for (energy, ranks, form), ms in zip(labels, times, strict=True):
        key = tuple(sorted(ranks.items())) if ranks is not None else ()
        damage = 0.0 if ranks is None else spectral_damage(ranker, ranks)
        option = SpeedOption(energy, ranks, form, ms, damage)
        if key not in fastest or option.ms < fastest[key].ms:
            fastest[key] = option
    return list(fastest.values())


def layer_treatment(timing: FormTiming) -> Treatment:
    """How layers alone are timed: as the models are, except that a runtime which runs an
    ONNX export (compiling every candidate of every layer would take hours) times them in
    eager PyTorch, in the same dtype and memory format; BatchNorms are not theirs to fold."""
    runtime = timing.treatment.runtime
    return replace(
        timing.treatment, runtime=runtime if runtime in FORM_RUNTIMES else "eager", fold_bn=False
    )


def _model_ms(models: list[nn.Module], x: torch.Tensor, timing: FormTiming) -> list[float]:
    """Medians (ms) of `models` (the original first), timed in turn under timing.treatment
    with BatchNorms folded into the convs before them, as a deployer runs both."""
    folded = replace(timing.treatment, fold_bn=True)
    size = tuple(x.shape[1:])
    names = ["the original model", "the planned model"][: len(models)]
    with tempfile.TemporaryDirectory(prefix="ht2-speed-") as work:  # ONNX files, if exported
        return time_in_turn(
            models,
            x,
            folded,
            names,
            timing.threads,
            timing.repeats,
            timing.warmup,
            input_size=size,
            workdir=Path(work),
        )


def _as_knapsack(layers: list[SpeedLayer]) -> list[list[Option]]:
    """Options in whole microseconds for the knapsack (which needs integer costs)."""
    return [
        [Option(o.energy or 1.0, max(1, round(o.ms * 1000)), o.damage) for o in layer.options]
        for layer in layers
    ]


def _choose(layers: list[SpeedLayer], capacity_ms: float) -> tuple[list[int], bool]:
    """Per-layer option indices within `capacity_ms` (least damage), and whether they fit;
    when nothing fits, the fastest option of every layer."""
    options = _as_knapsack(layers)
    capacity = capacity_ms * 1000
    if capacity < cheapest_total(options):
        return [min(range(len(o)), key=lambda i: o[i].cost) for o in options], False
    return choose(options, capacity), True


def _plan_of(
    model: nn.Module,
    example_input: torch.Tensor,
    options: CompressOptions,
    layers: list[SpeedLayer],
    chosen: list[int],
) -> Plan:
    """The plan that runs each layer as its chosen option: factors at its ranks in its form,
    or dense with the reason said."""
    picked = {layer.name: layer.options[i] for layer, i in zip(layers, chosen, strict=True)}
    dense = [name for name, option in picked.items() if option.dense]
    ranks = {name: option.ranks for name, option in picked.items() if not option.dense}
    exclude = [*(options.exclude or ()), *dense]
    result = plan(
        model,
        example_input,
        replace(options, target=None, layer_ranks=ranks, exclude=exclude or None),
    )
    for entry in result.layers:
        option = picked.get(entry.name)
        if option is not None:
            entry.form = option.form
            entry.energy = option.energy
    for name in dense:
        result.dense[name] = KEPT_DENSE
    result.provenance["exclude"] = list(options.exclude) if options.exclude else None
    return result


def measure_layers(
    model: nn.Module,
    example_input: torch.Tensor,
    options: CompressOptions,
    timing: FormTiming,
    energies=SPEED_ENERGIES,
) -> list[SpeedLayer]:
    """Every layer the policy replaces, with its options timed on the target."""
    include = list(options.include) if options.include else None
    exclude = list(options.exclude) if options.exclude else None
    chosen = replaced_layers(model, options.method, example_input, include, exclude)
    if not chosen:
        raise HT2Error("no layer to compress in this model for a speed target")
    shapes = input_shapes(model, example_input, [module for _, module, _ in chosen])
    layers = []
    for name, module, method in chosen:
        if module not in shapes:
            continue  # not run on this input: it costs nothing here
        found = layer_options(
            module,
            method,
            shapes[module],
            timing,
            energies,
            options.round_ranks,
            options.keep_if_larger,
        )
        layers.append(SpeedLayer(name, method, found))
    return layers


def plan_for_speedup(
    model: nn.Module,
    example_input: torch.Tensor | None,
    options: CompressOptions,
    speedup: float,
    timing: FormTiming | None = None,
    energies=SPEED_ENERGIES,
    rounds: int = 3,
) -> Plan:
    """The plan of least spectral damage whose model runs `speedup` times faster than the
    original under `timing` (model left unchanged). Layers are timed alone (layer_treatment),
    the whole models in timing.treatment's runtime (onnxruntime and openvino included) with
    BatchNorms folded on both sides (its fold_bn is not read); the rounds correct what the
    layers alone mispredict. Out of
    reach: the fastest plan the options allow, with a note. The plan's
    provenance["speed_target"] says what was timed, the speedup reached and every round."""
    if example_input is None:
        raise HT2Error(
            "a speed target times the model: give an example input", params="example_input"
        )
    if not speedup > 1.0:
        raise HT2Error(
            f"a speed target must be above 1 (such as 2 or 2x), got {speedup:g}",
            params="speedup",
        )
    timing = timing or FormTiming()
    options.check(True)
    check_treatment(timing.treatment, resolve_device(timing.device))
    layers = measure_layers(model, example_input, options, timing, energies)
    target = resolve_device(timing.device)
    x = torch.randn((timing.batch_size, *example_input.shape[1:]), device=target)
    dense_layers_ms = sum(layer.options[0].ms for layer in layers)
    history: list[SpeedRound] = []
    plans: list[Plan] = []
    (dense_ms,) = _model_ms([model], x, timing)
    overhead = max(dense_ms - dense_layers_ms, 0.0)  # what the replaced layers do not cost
    capacity_ms = dense_ms / speedup - overhead
    for _ in range(max(rounds, 1)):
        chosen, fits = _choose(layers, capacity_ms)
        candidate = _plan_of(model, example_input, options, layers, chosen)
        trial = copy.deepcopy(model)
        apply(trial, _plain(candidate), example_input=example_input)
        dense_ms, planned_ms = _model_ms([model, trial], x, timing)
        predicted = overhead + sum(
            layer.options[i].ms for layer, i in zip(layers, chosen, strict=True)
        )
        damage = sum(layer.options[i].damage for layer, i in zip(layers, chosen, strict=True))
        history.append(SpeedRound(capacity_ms, predicted, planned_ms, dense_ms, damage, chosen))
        plans.append(candidate)
        if not fits or dense_ms / planned_ms >= speedup * (1 - TOLERANCE):
            break
        capacity_ms *= (dense_ms / speedup) / planned_ms  # the layers alone were optimistic
    best = _best_round(history, speedup)
    result = plans[best]
    result.provenance.update(allocation="latency", rank_rule="latency", energy=None)
    result.provenance["speed_target"] = _record(history, best, speedup, timing, energies)
    return result


def _plain(candidate: Plan) -> Plan:
    """`candidate` with plain factors (forms and times do not depend on a data-aware fit)."""
    plain = copy.copy(candidate)
    plain.layers = [replace(layer, fit="plain") for layer in candidate.layers]
    return plain


def _best_round(history: list[SpeedRound], speedup: float) -> int:
    """The round of least damage among those that met the target, else the fastest."""
    met = [i for i, r in enumerate(history) if r.speedup >= speedup * (1 - TOLERANCE)]
    if met:
        return min(met, key=lambda i: history[i].damage)
    return max(range(len(history)), key=lambda i: history[i].speedup)


def _record(
    history: list[SpeedRound], best: int, speedup: float, timing: FormTiming, energies
) -> dict[str, Any]:
    """What the plan's provenance says about the speed target and how it was timed."""
    kept = history[best]
    met = kept.speedup >= speedup * (1 - TOLERANCE)
    note = (
        ""
        if met
        else f"{speedup:g}x is out of reach here: the nearest reached is {kept.speedup:.2f}x"
    )
    treatment = {**timing.treatment.to_dict(), "fold_bn": True}  # as the models were timed
    treatment["layers_runtime"] = layer_treatment(timing).runtime
    return {
        "factor": speedup,
        "reached": kept.speedup,
        "met": met,
        "note": note,
        "device": timing.device,
        "batch_size": timing.batch_size,
        **treatment,
        "energies": list(energies),
        "rounds": [
            {
                "capacity_ms": r.capacity_ms,
                "predicted_ms": r.predicted_ms,
                "planned_ms": r.planned_ms,
                "dense_ms": r.dense_ms,
                "speedup": r.speedup,
                "damage": r.damage,
            }
            for r in history
        ],
        "kept_round": best,
    }
