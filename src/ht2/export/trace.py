"""Find conv -> BatchNorm2d pairs that can be folded, by watching real forward passes.

A pair qualifies only when the BatchNorm's input is the very tensor object the conv returned
and no other operation, anywhere in the forward, touches that tensor (every torch function
call is watched, not only module calls); the model must not return it either. Anything
unusual (a module run twice, shared weights, a subclassed layer) refuses the pair.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

OUTSIDE = "<outside>"


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested lists, tuples and dicts."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


class _Watch(TorchFunctionMode):
    """Records conv outputs, BatchNorm inputs and every use of a conv output during a forward."""

    def __init__(self, convs: dict[nn.Module, str], bns: dict[nn.Module, str]) -> None:
        super().__init__()
        self.produced: dict[int, tuple[str, torch.Tensor]] = {}  # tensors kept alive: ids stay
        self.uses: dict[str, list[str]] = defaultdict(list)
        self.bn_inputs: dict[str, list[Any]] = defaultdict(list)
        self.calls: Counter[str] = Counter()
        self.inside: list[str] = []
        self.handles = [
            *(m.register_forward_hook(self._conv_done) for m in convs),
            *(m.register_forward_pre_hook(self._bn_start) for m in bns),
            *(m.register_forward_hook(self._bn_done) for m in bns),
        ]
        self.names = {**convs, **bns}

    def _conv_done(self, module: nn.Module, args: tuple, output: Any) -> None:
        name = self.names[module]
        self.calls[name] += 1
        if isinstance(output, torch.Tensor):
            self.produced[id(output)] = (name, output)

    def _bn_start(self, module: nn.Module, args: tuple) -> None:
        name = self.names[module]
        self.calls[name] += 1
        self.bn_inputs[name].append(args[0] if len(args) == 1 else None)
        self.inside.append(name)

    def _bn_done(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.inside.pop()

    def note_use(self, value: Any) -> None:
        """Count a use of every conv output found in `value`, by the BatchNorm running now."""
        for tensor in tensors_in(value):
            hit = self.produced.get(id(tensor))
            if hit is not None and hit[1] is tensor:
                self.uses[hit[0]].append(self.inside[-1] if self.inside else OUTSIDE)

    def producer_of(self, tensor: Any) -> str | None:
        """The conv that returned exactly this tensor object, if any."""
        hit = self.produced.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return hit[0] if hit is not None and hit[1] is tensor else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.note_use((args, kwargs))
        return func(*args, **kwargs)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _shared(model: nn.Module) -> set[int]:
    """Ids of modules and parameters reachable under more than one name."""
    modules = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    params = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    return {key for key, count in (modules + params).items() if count > 1}


def _pairs_in_one_run(
    model: nn.Module, x: torch.Tensor, convs: dict[nn.Module, str], bns: dict[nn.Module, str]
) -> tuple[dict[str, str], dict[str, str]]:
    watch = _Watch(convs, bns)
    try:
        with torch.no_grad(), watch:
            output = model(x)
            watch.note_use(output)
    finally:
        watch.remove()
    by_name = {name: module for module, name in {**convs, **bns}.items()}
    shared = _shared(model)
    pairs: dict[str, str] = {}
    refused: dict[str, str] = {}
    for bn_name in bns.values():
        calls = watch.calls[bn_name]
        if calls != 1:
            refused[bn_name] = "does not run" if calls == 0 else f"runs {calls} times per forward"
            continue
        conv_name = watch.producer_of(watch.bn_inputs[bn_name][0])
        if conv_name is None:
            refused[bn_name] = "its input is not a Conv2d's output"
            continue
        reason = _refusal(by_name[conv_name], by_name[bn_name], watch, conv_name, bn_name, shared)
        if reason:
            refused[bn_name] = f"{conv_name} -> {bn_name}: {reason}"
        else:
            pairs[bn_name] = conv_name
    return pairs, refused


def _refusal(
    conv: nn.Module, bn: nn.Module, watch: _Watch, conv_name: str, bn_name: str, shared: set[int]
) -> str | None:
    """Why this conv -> BN pair must not be folded, or None when it may be."""
    if watch.calls[conv_name] != 1:
        return f"the conv runs {watch.calls[conv_name]} times per forward"
    others = [use for use in watch.uses[conv_name] if use != bn_name]
    if others:
        return "the conv's output is also used elsewhere"
    if conv.out_channels != bn.num_features:
        return "channel counts differ"
    if bn.running_mean is None or bn.running_var is None:
        return "the BatchNorm keeps no running statistics"
    if not (conv.weight.is_floating_point() and bn.running_var.is_floating_point()):
        return "not floating point"
    owned = [conv, bn, *conv.parameters(), *bn.parameters()]
    if any(id(item) in shared for item in owned):
        return "a module or weight is shared with another place in the model"
    return None


def foldable_pairs(
    model: nn.Module, inputs: Sequence[torch.Tensor]
) -> tuple[dict[str, str], dict[str, str]]:
    """BatchNorm2d name -> conv name for every pair safe to fold in every run on `inputs`,
    and BatchNorm2d name -> why not for the others. Runs `model` in eval mode, no gradients."""
    convs = {m: n for n, m in model.named_modules() if type(m) is nn.Conv2d}
    bns = {m: n for n, m in model.named_modules() if type(m) is nn.BatchNorm2d}
    was_training = model.training
    model.eval()
    try:
        runs = [_pairs_in_one_run(model, x, convs, bns) for x in inputs]
    finally:
        model.train(was_training)
    refused: dict[str, str] = {}
    for _, why in runs:
        for name, reason in why.items():
            refused.setdefault(name, reason)
    pairs: dict[str, str] = {}
    for bn_name, conv_name in runs[0][0].items():
        if bn_name in refused:
            continue
        if all(found.get(bn_name) == conv_name for found, _ in runs):
            pairs[bn_name] = conv_name
        else:
            refused[bn_name] = "the conv before it differs from one input to another"
    return pairs, refused
