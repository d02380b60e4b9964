"""Channel pruning, decided: the rival to decomposition that users weigh it against.

Filters are ranked by the L1 norm of their weights (the classic magnitude criterion), and
every prunable chain keeps the same fraction of its channels: the largest fraction whose
model is at least `reduction` times smaller in parameters, topped up channel by channel to
come as close to that size as whole channels allow. Only the inner channels of chains
(ht2.surgery.channel_chains) are pruned, so residual shortcuts stay correct.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ht2.errors import HT2Error
from ht2.metrics.counting import count_params
from ht2.surgery.channel_chains import ChannelChain, find_channel_chains
from ht2.surgery.prune import apply_pruning

IMPORTANCE = "l1"


@dataclass
class PruningPlan:
    """Which channels each chain keeps (`keep_fraction`: the share of all inner channels), and
    what that costs: JSON-ready via to_dict."""

    entries: list[dict[str, Any]]
    keep_fraction: float
    params_before: int
    params_after: int
    importance: str = IMPORTANCE
    chains: int = field(init=False)

    def __post_init__(self) -> None:
        self.chains = len(self.entries)

    @property
    def param_reduction(self) -> float:
        return self.params_before / self.params_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "importance": self.importance,
            "keep_fraction": self.keep_fraction,
            "chains": self.chains,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "param_reduction": self.param_reduction,
            "entries": self.entries,
        }


class _Counter:
    """The model's parameter count as a function of the channels each chain keeps; exact
    where a conv is the consumer of one chain and the producer of the next (a bottleneck)."""

    def __init__(self, model: nn.Module, chains: list[ChannelChain]) -> None:
        self.base = count_params(model)
        self.chains = chains
        self.convs: dict[str, list] = {}  # name: [out, in, weights per out x in, has bias]
        self.norms: list[int] = []  # chains whose BatchNorm has affine terms
        for index, chain in enumerate(chains):
            for name in (chain.producer, chain.consumer):
                conv = model.get_submodule(name)
                self.convs.setdefault(
                    name,
                    [None, None, conv.weight[0, 0].numel(), conv.bias is not None, conv],
                )
            self.convs[chain.producer][0] = index
            self.convs[chain.consumer][1] = index
            if chain.norm is not None and model.get_submodule(chain.norm).affine:
                self.norms.append(index)
        self.fixed = self.base - sum(self._conv(entry, None) for entry in self.convs.values())
        self.fixed -= sum(2 * chains[index].channels for index in self.norms)

    @staticmethod
    def _conv(entry: list, kept: list[int] | None) -> int:
        out_index, in_index, area, bias, conv = entry
        outs = conv.out_channels if out_index is None or kept is None else kept[out_index]
        ins = conv.in_channels if in_index is None or kept is None else kept[in_index]
        return outs * ins * area + (outs if bias else 0)

    def params(self, kept: list[int]) -> int:
        """Parameters of the model once chain i keeps kept[i] channels."""
        convs = sum(self._conv(entry, kept) for entry in self.convs.values())
        return self.fixed + convs + sum(2 * kept[index] for index in self.norms)


def kept_channels(channels: int, fraction: float) -> int:
    """How many of `channels` a chain keeps at `fraction`: rounded, never below one."""
    return max(1, min(channels, round(channels * fraction)))


def _kept_within(counter: _Counter, budget: float) -> list[int]:
    """Channels each chain keeps: the largest common fraction (to 1e-6) within `budget`,
    then one channel at a time to the chain keeping the smallest share, while one fits."""
    chains = counter.chains
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        kept = [kept_channels(chain.channels, middle) for chain in chains]
        if counter.params(kept) <= budget:
            low = middle
        else:
            high = middle
    kept = [kept_channels(chain.channels, low) for chain in chains]
    while True:
        order = sorted(range(len(chains)), key=lambda j: (kept[j] / chains[j].channels, j))
        for i in order:
            if kept[i] < chains[i].channels:
                kept[i] += 1
                if counter.params(kept) <= budget:
                    break
                kept[i] -= 1
        else:
            return kept


def _l1_ranking(model: nn.Module, chain: ChannelChain, kept: int) -> list[int]:
    """The `kept` channels of `chain` whose producer filters have the largest L1 norms."""
    weight = model.get_submodule(chain.producer).weight.detach()
    norms = weight.abs().flatten(1).sum(dim=1)
    return sorted(norms.argsort(descending=True, stable=True)[:kept].tolist())


def plan_pruning(model: nn.Module, reduction: float) -> PruningPlan:
    """The channels to keep for a model `reduction` times smaller in parameters; a one-line
    error when the model has no prunable chain or cannot get that small by pruning them."""
    if not reduction > 1:
        raise HT2Error(f"a parameter reduction must be above 1, got {reduction:g}")
    chains = find_channel_chains(model)
    if not chains:
        raise HT2Error(
            f"{type(model).__name__} has no channels that can be pruned alone (no conv whose "
            "outputs reach only one other conv)"
        )
    counter = _Counter(model, chains)
    base = counter.base
    smallest = counter.params([1] * len(chains))
    if smallest > base / reduction:
        raise HT2Error(
            f"channel pruning reaches at most {base / smallest:.2f}x fewer parameters on "
            f"{type(model).__name__} ({len(chains)} prunable chains), not {reduction:g}x"
        )
    kept = _kept_within(counter, base / reduction)
    entries = [
        {
            "producer": chain.producer,
            "norm": chain.norm,
            "consumer": chain.consumer,
            "keep": _l1_ranking(model, chain, n),
        }
        for chain, n in zip(chains, kept, strict=True)
    ]
    share = sum(kept) / sum(chain.channels for chain in chains)
    return PruningPlan(entries, share, base, counter.params(kept))


def prune(model: nn.Module, reduction: float) -> PruningPlan:
    """Plan and apply channel pruning to `model` in place; returns the plan it carried out."""
    plan = plan_pruning(model, reduction)
    apply_pruning(model, plan.entries)
    after = count_params(model)
    if after != plan.params_after:  # the counting above and the surgery must agree
        raise HT2Error(f"pruning counted {plan.params_after} parameters but left {after}")
    return plan
