"""Channel pruning, done: keep some channels of a chain (ht2.surgery.channel_chains) by
slicing its producer's outputs, its BatchNorm and its consumer's inputs.

A pruning is recorded as {"producer", "norm", "consumer", "keep"} entries (the kept channel
indices, ascending), on the model as `ht2_pruned` and in a saved folder's ht2.json, so that
loading replays the same shapes before reading the tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ht2.errors import HT2Error

PRUNED = "pruned"


def pruned_of(model: nn.Module) -> list[dict[str, Any]]:
    """The prunings recorded on `model` (by apply_pruning)."""
    return [dict(entry) for entry in getattr(model, "ht2_pruned", None) or []]


def _sliced_conv(conv: nn.Conv2d, outputs: torch.Tensor | None, inputs: torch.Tensor | None):
    """A copy of `conv` with only the `outputs` output and `inputs` input channels (None: all)."""
    weight = conv.weight.detach()
    bias = None if conv.bias is None else conv.bias.detach()
    if outputs is not None:
        weight = weight[outputs]
        bias = None if bias is None else bias[outputs]
    if inputs is not None:
        weight = weight[:, inputs]
    sliced = nn.Conv2d(
        weight.shape[1],
        weight.shape[0],
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=bias is not None,
        padding_mode=conv.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    sliced.weight = nn.Parameter(weight.clone(), requires_grad=conv.weight.requires_grad)
    if bias is not None:
        sliced.bias = nn.Parameter(bias.clone(), requires_grad=conv.bias.requires_grad)
    sliced.train(conv.training)
    return sliced


def _sliced_norm(norm: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    """A copy of `norm` over the `keep` channels only, statistics and affine terms included."""
    tensors = [*norm.parameters(), *norm.buffers()]
    sliced = nn.BatchNorm2d(
        len(keep),
        eps=norm.eps,
        momentum=norm.momentum,
        affine=norm.affine,
        track_running_stats=norm.track_running_stats,
        device=keep.device,
        dtype=tensors[0].dtype if tensors else None,
    )
    with torch.no_grad():
        if norm.affine:
            sliced.weight.copy_(norm.weight[keep])
            sliced.bias.copy_(norm.bias[keep])
        if norm.track_running_stats:
            sliced.running_mean.copy_(norm.running_mean[keep])
            sliced.running_var.copy_(norm.running_var[keep])
            sliced.num_batches_tracked.copy_(norm.num_batches_tracked)
    sliced.train(norm.training)
    return sliced


def _module(model: nn.Module, name: str, kind: type, what: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise HT2Error(
            f"the pruning names {what} '{name}', which the model does not have"
        ) from None
    if type(module) is not kind:
        raise HT2Error(
            f"the pruning's {what} '{name}' is a {type(module).__name__}, not a {kind.__name__}: "
            "the model is not the one that was pruned"
        )
    return module


def prune_chain(model: nn.Module, entry: dict[str, Any]) -> nn.Module:
    """Keep only `entry["keep"]` channels between its producer and consumer, in place."""
    producer = _module(model, entry["producer"], nn.Conv2d, "producer")
    consumer = _module(model, entry["consumer"], nn.Conv2d, "consumer")
    norm = _module(model, entry["norm"], nn.BatchNorm2d, "norm") if entry["norm"] else None
    channels = producer.out_channels
    widths = {consumer.in_channels, channels, *([norm.num_features] if norm else [])}
    if len(widths) != 1 or producer.groups != 1 or consumer.groups != 1:
        raise HT2Error(
            f"the pruning {entry['producer']} -> {entry['consumer']} does not fit the model: "
            "its layers do not share one channel count"
        )
    keep = list(entry["keep"])
    if not keep or keep != sorted(set(keep)) or keep[0] < 0 or keep[-1] >= channels:
        shown = f"{keep[:8]}"[:-1] + (", ...]" if len(keep) > 8 else "]")
        raise HT2Error(
            f"the pruning of {entry['producer']} keeps {shown}: want ascending, distinct "
            f"channel indices below {channels}, at least one"
        )
    index = torch.tensor(keep, dtype=torch.long, device=producer.weight.device)
    model.set_submodule(entry["producer"], _sliced_conv(producer, index, None))
    if norm is not None:
        model.set_submodule(entry["norm"], _sliced_norm(norm, index))
    model.set_submodule(entry["consumer"], _sliced_conv(consumer, None, index))
    model.ht2_pruned = pruned_of(model) + [
        {
            "producer": entry["producer"],
            "norm": entry["norm"],
            "consumer": entry["consumer"],
            "keep": keep,
        }
    ]
    return model


def apply_pruning(model: nn.Module, entries: list[dict[str, Any]]) -> nn.Module:
    """Prune every chain `entries` lists, in place, in order (a saved folder's replay)."""
    for entry in entries:
        prune_chain(model, entry)
    return model


def check_pruned(data: Any, where: str) -> list[dict[str, Any]]:
    """The manifest's pruned list, each entry {"producer": str, "norm": str | null,
    "consumer": str, "keep": [int, ...]}, else a one-line error naming `where`."""
    fields = {"producer", "norm", "consumer", "keep"}

    def fine(entry: Any) -> bool:
        return (
            isinstance(entry, dict)
            and set(entry) == fields
            and all(isinstance(entry[key], str) and entry[key] for key in ("producer", "consumer"))
            and (entry["norm"] is None or (isinstance(entry["norm"], str) and entry["norm"]))
            and isinstance(entry["keep"], list)
            and all(type(index) is int for index in entry["keep"])
        )

    if not isinstance(data, list) or not all(fine(entry) for entry in data):
        raise HT2Error(
            f'{where} has a malformed "{PRUNED}" list: want [{{"producer": ..., "norm": ..., '
            '"consumer": ..., "keep": [channel indices]}]'
        )
    return [dict(entry) for entry in data]
