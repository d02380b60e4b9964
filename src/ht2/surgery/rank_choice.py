"""Choose every replaced layer's ranks: energy rule, VBMF, a ranks file, or a size target."""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.layers import effective_weight
from ht2.metrics import count_params
from ht2.surgery.budget import budget_of
from ht2.surgery.costs import factorized_cost
from ht2.surgery.policy import Decision
from ht2.surgery.ranking import LayerRanker, rank_keys, rank_limits, round_up
from ht2.surgery.targets import Target, TargetSolution, solve_energy

Ranks = dict[str, int]


def check_layer_ranks(
    layer_ranks: Mapping[str, Mapping[str, int]],
    layers: list[tuple[str, nn.Module]],
    decisions: list[Decision],
) -> dict[str, Ranks]:
    """Given per-layer ranks, checked against the layers and methods they will apply to."""
    by_name = {name: (module, d) for (name, module), d in zip(layers, decisions, strict=True)}
    checked: dict[str, Ranks] = {}
    for name, ranks in layer_ranks.items():
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise HT2Error(f"ranks given for layer {name!r}, which the model does not have{hint}")
        module, decision = by_name[name]
        if decision.method is None:
            raise HT2Error(f"ranks given for layer {name!r}, which stays dense: {decision.reason}")
        keys = rank_keys(decision.method)
        if set(ranks) != set(keys):
            raise HT2Error(
                f"layer {name!r} ({decision.method}) needs ranks {', '.join(keys)}; "
                f"got {', '.join(sorted(ranks)) or 'none'}"
            )
        limits = rank_limits(decision.method, module.weight.shape)
        for key in keys:
            value = ranks[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HT2Error(f"rank {key} of layer {name!r} must be a positive integer")
            if value > limits[key]:
                raise HT2Error(
                    f"rank {key}={value} of layer {name!r} is larger than its dimensions allow "
                    f"({limits[key]})"
                )
        checked[name] = {key: int(ranks[key]) for key in keys}
    return checked


class RankChoice:
    """The ranks (and energy) of each replaced layer, with spectra computed at most once."""

    def __init__(
        self,
        chosen: list[tuple[str, nn.Module, str]],
        given: dict[str, Ranks],
        rule: str,
        energy: float,
        layer_energies: dict[str, float],
        round_ranks: int,
    ):
        self.chosen = chosen
        self.given = given
        self.rule = rule
        self.energy = energy
        self.layer_energies = layer_energies
        self.round_ranks = round_ranks
        self._rankers: dict[str, LayerRanker] = {}
        self.unrounded: dict[str, Ranks] = {}  # ranks before --round-ranks, where it applied

    @property
    def rule_name(self) -> str:
        return self.rule + ("+file" if self.given else "")

    def ranker(self, name: str, module: nn.Module, method: str) -> LayerRanker:
        if name not in self._rankers:
            self._rankers[name] = LayerRanker(method, effective_weight(module))
        return self._rankers[name]

    def ranks_of(
        self, name: str, module: nn.Module, method: str
    ) -> tuple[Ranks | None, float | None]:
        """(ranks, energy) of one layer; ranks None: the decomposition picks them at energy."""
        energy = None if self.rule == "vbmf" else self.layer_energies.get(name, self.energy)
        if name in self.given:
            ranks, energy = self.given[name], None
        elif self.rule == "vbmf":
            ranks = self.ranker(name, module, method).by_vbmf()
        elif self.round_ranks > 1 or name in self._rankers:
            ranks = self.ranker(name, module, method).at_energy(energy)
        else:
            return None, energy
        rounded = round_up(method, ranks, self.round_ranks, module.weight.shape)
        if rounded != ranks:
            self.unrounded[name] = ranks
        return rounded, energy

    def rounding_cost(self, model: nn.Module) -> int:
        """Parameters that rounding ranks up added to the layers it changed."""
        extra = 0
        for name, ranks in self.unrounded.items():
            module = model.get_submodule(name)
            if getattr(module, "ranks", None) is None:
                continue  # left dense
            unrounded = factorized_cost(module.method, module.spec, ranks)[0]
            extra += count_params(module) - unrounded
        return extra

    def solve(
        self,
        target: Target,
        model: nn.Module,
        example_input: torch.Tensor | None,
        keep_if_larger: bool,
    ) -> TargetSolution:
        """The global energy whose ranks give the whole model `target`'s reduction."""
        if self.rule != "energy":
            raise HT2Error("a size target chooses energies; it cannot be combined with VBMF ranks")
        if self.layer_energies:
            raise HT2Error("a size target chooses one energy; do not also give per-layer energies")
        budget = budget_of(
            self.chosen, model, target, example_input, keep_if_larger, self.round_ranks
        )
        for layer in budget.layers:  # share the spectra (and CP fits) with ranks_of
            layer._ranker = self.ranker(layer.name, layer.module, layer.method)

        def reduction_at(energy: float) -> float:
            spent = sum(
                budget.cost(layer, self.given.get(layer.name) or layer.ranker.at_energy(energy))
                for layer in budget.layers
            )
            return budget.reduction(spent)

        return solve_energy(reduction_at, target)
