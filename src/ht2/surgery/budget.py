"""What an allocation spends: each replaced layer's cost (params or MACs) at given ranks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.layers import effective_weight
from ht2.metrics import count_params, layer_macs, macs_under
from ht2.surgery.costs import factorized_cost
from ht2.surgery.policy import matches, paper_policy
from ht2.surgery.ranking import LayerRanker, round_up
from ht2.surgery.targets import TOLERANCE, Target
from ht2.surgery.walk import candidate_layers, first_conv_name, input_shapes, spec_of

Ranks = dict[str, int]


@dataclass
class AllocLayer:
    """One layer the policy replaces: its method, dense cost, input shape and (lazy) spectra."""

    name: str
    module: nn.Module
    method: str
    dense: int  # its cost while dense, in the budget's unit
    input_shape: tuple[int, ...] | None
    _ranker: LayerRanker | None = field(default=None, repr=False)

    @property
    def ranker(self) -> LayerRanker:
        if self._ranker is None:
            self._ranker = LayerRanker(self.method, effective_weight(self.module))
        return self._ranker


@dataclass
class Budget:
    """The whole model's cost split into the replaced layers and the rest (`fixed`)."""

    target: Target
    layers: list[AllocLayer]
    total_before: int
    fixed: int
    keep_if_larger: bool
    round_ranks: int

    @property
    def limit(self) -> float:
        """The total cost the target allows."""
        return self.total_before / self.target.factor

    def cost(self, layer: AllocLayer, ranks: Ranks) -> int:
        """The layer's cost at `ranks` (rounded as compress would); dense when that is smaller."""
        ranks = round_up(layer.method, ranks, self.round_ranks, layer.module.weight.shape)
        spec = spec_of(layer.module)
        params, macs = factorized_cost(layer.method, spec, ranks, layer.input_shape)
        if self.keep_if_larger and params >= count_params(layer.module):
            return layer.dense
        return params if self.target.kind == "params" else int(macs or 0)

    def reduction(self, layer_costs: int) -> float:
        """The whole model's reduction when the replaced layers cost `layer_costs` together."""
        return self.total_before / max(self.fixed + layer_costs, 1)

    def met(self, reduction: float) -> bool:
        return abs(reduction / self.target.factor - 1) <= TOLERANCE


def replaced_layers(
    model: nn.Module,
    method: str,
    example_input: torch.Tensor | None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
) -> list[tuple[str, nn.Module, str]]:
    """(name, module, method) of every layer compress() would replace, in module order."""
    first = first_conv_name(model, example_input)
    chosen = []
    for name, module in candidate_layers(model):
        if matches(name, include, exclude):
            continue
        decision = paper_policy(module, name == first, method)
        if decision.method is not None:
            chosen.append((name, module, decision.method))
    return chosen


def budget_of(
    chosen: list[tuple[str, nn.Module, str]],
    model: nn.Module,
    target: Target,
    example_input: torch.Tensor | None,
    keep_if_larger: bool = True,
    round_ranks: int = 1,
) -> Budget:
    """The budget of `target` over the (name, module, method) layers `chosen` in `model`."""
    if target.kind == "macs" and example_input is None:
        raise HT2Error("a MACs target needs an example input to count MACs")
    shapes = (
        input_shapes(model, example_input, [m for _, m, _ in chosen])
        if example_input is not None
        else {}
    )
    by_params = target.kind == "params"
    macs = layer_macs(model, example_input) if not by_params else None
    total = count_params(model) if by_params else sum(macs.values())
    layers = [
        AllocLayer(
            name,
            module,
            kind,
            count_params(module) if by_params else macs_under(macs, name),
            shapes.get(module),
        )
        for name, module, kind in chosen
    ]
    fixed = total - sum(layer.dense for layer in layers)
    return Budget(target, layers, total, fixed, keep_if_larger, round_ranks)


def make_budget(
    model: nn.Module,
    method: str,
    target: Target,
    example_input: torch.Tensor | None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    keep_if_larger: bool = True,
    round_ranks: int = 1,
) -> Budget:
    """The budget of `target` over the layers compress() would replace in `model`."""
    chosen = replaced_layers(model, method, example_input, include, exclude)
    return budget_of(chosen, model, target, example_input, keep_if_larger, round_ranks)
