"""Choose every replaced layer's ranks: energy rule, VBMF, a ranks file, or a size target."""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.layers import ConvSpec, LinearSpec
from ht2.metrics import count_params, macs_under
from ht2.metrics.observe import observe
from ht2.surgery.costs import factorized_cost
from ht2.surgery.policy import Decision
from ht2.surgery.ranking import RANK_KEYS, LayerRanker, rank_limits, round_up
from ht2.surgery.targets import Target, TargetSolution, solve_energy

Ranks = dict[str, int]


def spec_of(module: nn.Module) -> ConvSpec | LinearSpec:
    """The JSON-friendly description of a dense Conv2d or Linear."""
    return LinearSpec.of(module) if isinstance(module, nn.Linear) else ConvSpec.of(module)


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
        keys = RANK_KEYS[decision.method]
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


def input_shapes(
    model: nn.Module, example_input: torch.Tensor, modules: list[nn.Module]
) -> dict[nn.Module, tuple[int, ...]]:
    """The input shape each of `modules` sees in one forward pass of `example_input`."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module, inputs):
        shapes.setdefault(module, tuple(inputs[0].shape))

    observe(model, example_input, [(m, record) for m in modules], before=True)
    return shapes


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
            self._rankers[name] = LayerRanker(method, module.weight)
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
        macs_before: dict[str, int] | None,
        keep_if_larger: bool,
    ) -> TargetSolution:
        """The global energy whose ranks give the whole model `target`'s reduction."""
        if self.rule != "energy":
            raise HT2Error("a size target chooses energies; it cannot be combined with VBMF ranks")
        if self.layer_energies:
            raise HT2Error("a size target chooses one energy; do not also give per-layer energies")
        shapes = (
            input_shapes(model, example_input, [m for _, m, _ in self.chosen])
            if example_input is not None
            else {}
        )
        by_params = target.kind == "params"
        total_before = count_params(model) if by_params else sum(macs_before.values())
        dense_of = {}
        for name, module, _ in self.chosen:
            dense_of[name] = count_params(module) if by_params else macs_under(macs_before, name)
        fixed = total_before - sum(dense_of.values())

        def layer_cost(name: str, module: nn.Module, method: str, energy: float) -> int:
            if name in self.given:
                ranks = self.ranks_of(name, module, method)[0]
            else:
                ranks = round_up(
                    method,
                    self.ranker(name, module, method).at_energy(energy),
                    self.round_ranks,
                    module.weight.shape,
                )
            spec = spec_of(module)
            params, macs = factorized_cost(method, spec, ranks, shapes.get(module))
            if keep_if_larger and params >= count_params(module):
                return dense_of[name]
            return params if by_params else int(macs or 0)

        def reduction_at(energy: float) -> float:
            after = fixed + sum(layer_cost(n, m, k, energy) for n, m, k in self.chosen)
            return total_before / max(after, 1)

        return solve_energy(reduction_at, target)
