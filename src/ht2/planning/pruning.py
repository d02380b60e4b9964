"""Channel pruning, decided: the rival to decomposition that users weigh it against.

Filters are ranked by the L1 norm of their weights (the classic magnitude criterion), and
every prunable chain keeps the same fraction of its channels: the largest fraction whose
model is at least `reduction` times smaller in parameters (or MACs), topped up channel by
channel to come as close to that size as whole channels allow. Only the inner channels of
chains (ht2.surgery.channel_chains) are pruned, so residual shortcuts stay correct.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.metrics.counting import count_params, layer_macs
from ht2.surgery.channel_chains import ChannelChain, find_channel_chains
from ht2.surgery.prune import apply_pruning

IMPORTANCE = "l1"
KINDS = ("params", "macs")


@dataclass
class PruningPlan:
    """Which channels each chain keeps (`keep_fraction`: the share of all inner channels), and
    what that costs in parameters and MACs per image: JSON-ready via to_dict."""

    entries: list[dict[str, Any]]
    keep_fraction: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    kind: str = "params"
    importance: str = IMPORTANCE
    chains: int = field(init=False)

    def __post_init__(self) -> None:
        self.chains = len(self.entries)

    @property
    def param_reduction(self) -> float:
        return self.params_before / self.params_after

    @property
    def mac_reduction(self) -> float:
        return self.macs_before / self.macs_after

    def to_dict(self) -> dict[str, Any]:
        return {
            "importance": self.importance,
            "target_kind": self.kind,
            "keep_fraction": self.keep_fraction,
            "chains": self.chains,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "param_reduction": self.param_reduction,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "mac_reduction": self.mac_reduction,
            "entries": self.entries,
        }


class _Counter:
    """A model's parameters (or MACs per image) as a function of the channels each chain keeps;
    exact where a conv is the consumer of one chain and the producer of the next (a
    bottleneck). `per_pair[name]`: what one (output, input) channel pair of that conv costs."""

    def __init__(
        self,
        model: nn.Module,
        chains: list[ChannelChain],
        total: int,
        per_pair: dict[str, int],
        with_bias_and_norm: bool,
    ) -> None:
        self.base, self.chains = total, chains
        out_of = {chain.producer: index for index, chain in enumerate(chains)}
        in_of = {chain.consumer: index for index, chain in enumerate(chains)}
        self.convs: dict[str, tuple] = {}  # name: (chain of its outputs, of its inputs, ...)
        for name in {**out_of, **in_of}:
            conv = model.get_submodule(name)
            self.convs[name] = (
                out_of.get(name),
                in_of.get(name),
                conv.out_channels,
                conv.in_channels,
                per_pair[name],
                with_bias_and_norm and conv.bias is not None,
            )
        self.norms = [
            index
            for index, chain in enumerate(chains)
            if with_bias_and_norm and chain.norm and model.get_submodule(chain.norm).affine
        ]
        full = [chain.channels for chain in chains]
        self.fixed = total - self._variable(full)

    def _variable(self, kept: list[int]) -> int:
        cost = 2 * sum(kept[index] for index in self.norms)
        for out_index, in_index, outs, ins, pair, bias in self.convs.values():
            outs = outs if out_index is None else kept[out_index]
            ins = ins if in_index is None else kept[in_index]
            cost += outs * ins * pair + (outs if bias else 0)
        return cost

    def count(self, kept: list[int]) -> int:
        """The total once chain i keeps kept[i] channels."""
        return self.fixed + self._variable(kept)


def _counters(
    model: nn.Module, chains: list[ChannelChain], example_input: torch.Tensor
) -> dict[str, _Counter]:
    """A parameter counter and a MAC counter over `chains`."""
    macs = layer_macs(model, example_input)
    names = {name for chain in chains for name in (chain.producer, chain.consumer)}
    unused = sorted(name for name in names if not macs[name])
    if unused:
        raise HT2Error(f"{unused[0]} does not run on the example input; it cannot be pruned")

    def pairs(name: str, per: dict[str, int]) -> int:
        conv = model.get_submodule(name)
        return per[name] // (conv.out_channels * conv.in_channels)

    weights = {name: model.get_submodule(name).weight.numel() for name in names}
    return {
        "params": _Counter(
            model, chains, count_params(model), {n: pairs(n, weights) for n in names}, True
        ),
        "macs": _Counter(
            model, chains, sum(macs.values()), {n: pairs(n, macs) for n in names}, False
        ),
    }


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
        if counter.count(kept) <= budget:
            low = middle
        else:
            high = middle
    kept = [kept_channels(chain.channels, low) for chain in chains]
    while True:
        order = sorted(range(len(chains)), key=lambda j: (kept[j] / chains[j].channels, j))
        for i in order:
            if kept[i] < chains[i].channels:
                kept[i] += 1
                if counter.count(kept) <= budget:
                    break
                kept[i] -= 1
        else:
            return kept


def _l1_ranking(model: nn.Module, chain: ChannelChain, kept: int) -> list[int]:
    """The `kept` channels of `chain` whose producer filters have the largest L1 norms."""
    weight = model.get_submodule(chain.producer).weight.detach()
    norms = weight.abs().flatten(1).sum(dim=1)
    return sorted(norms.argsort(descending=True, stable=True)[:kept].tolist())


def plan_pruning(
    model: nn.Module, reduction: float, example_input: torch.Tensor, kind: str = "params"
) -> PruningPlan:
    """The channels to keep for a model `reduction` times smaller in `kind` (params or macs,
    MACs counted on `example_input`, a batch of one); a one-line error when the model has no
    prunable chain or cannot get that small by pruning them."""
    if kind not in KINDS:
        raise HT2Error(f"kind must be one of {', '.join(KINDS)}, got {kind!r}", params="kind")
    if not reduction > 1:
        raise HT2Error(f"a reduction must be above 1, got {reduction:g}")
    chains = find_channel_chains(model)
    if not chains:
        raise HT2Error(
            f"{type(model).__name__} has no channels that can be pruned alone (no conv whose "
            "outputs reach only one other conv)"
        )
    counters = _counters(model, chains, example_input)
    counter = counters[kind]
    smallest = counter.count([1] * len(chains))
    if smallest > counter.base / reduction:
        noun = "parameters" if kind == "params" else "MACs"
        raise HT2Error(
            f"channel pruning reaches at most {counter.base / smallest:.2f}x fewer {noun} on "
            f"{type(model).__name__} ({len(chains)} prunable chains), not {reduction:g}x"
        )
    kept = _kept_within(counter, counter.base / reduction)
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
    params, macs = counters["params"], counters["macs"]
    return PruningPlan(
        entries, share, params.base, params.count(kept), macs.base, macs.count(kept), kind
    )


def prune(
    model: nn.Module, reduction: float, example_input: torch.Tensor, kind: str = "params"
) -> PruningPlan:
    """Plan and apply channel pruning to `model` in place; returns the plan it carried out."""
    plan = plan_pruning(model, reduction, example_input, kind)
    apply_pruning(model, plan.entries)
    after = count_params(model), sum(layer_macs(model, example_input).values())
    if after != (plan.params_after, plan.macs_after):  # counting and surgery must agree
        raise HT2Error(
            f"pruning counted {plan.params_after} parameters and {plan.macs_after} MACs but "
            f"left {after[0]} and {after[1]}"
        )
    return plan


def pruning_summary(
    model: nn.Module, original: nn.Module, input_size: tuple[int, ...]
) -> dict[str, Any]:
    """What a pruned `model` (as loaded, its kept channels in `model.ht2_pruned`) keeps of
    `original`: per chain the channels kept, in all the parameters and MACs per image."""
    from ht2.surgery.prune import pruned_of

    example_input = torch.zeros(1, *input_size)
    macs = sum(layer_macs(model, example_input).values())
    macs_before = sum(layer_macs(original, example_input).values())
    chains = []
    for entry in pruned_of(model):
        total = original.get_submodule(entry["producer"]).out_channels
        chains.append(
            {
                **{k: entry[k] for k in ("producer", "norm", "consumer")},
                "kept": len(entry["keep"]),
                "channels": total,
            }
        )
    params, params_before = count_params(model), count_params(original)
    return {
        "chains": chains,
        "params_before": params_before,
        "params_after": params,
        "param_reduction": params_before / params,
        "macs_before": macs_before,
        "macs_after": macs,
        "mac_reduction": macs_before / macs,
    }
