"""Where channels can be pruned: a conv whose every output channel reaches exactly one other
conv, through at most a BatchNorm and channel-wise layers (activations, pooling, dropout).

Only such inner channels are pruned. A channel that also feeds an addition (a residual
shortcut), a concatenation or a Linear layer is tied to others and left alone, which is what
keeps pruning correct on any model: ResNets with identity or zero-padding shortcuts included.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ht2.errors import HT2Error

CHANNELWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
)
CHANNELWISE_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.gelu,
    F.silu,
    F.hardswish,
    F.dropout,
    F.max_pool2d,
    F.avg_pool2d,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
}
CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous"}


@dataclass(frozen=True)
class ChannelChain:
    """Channels made by `producer`, normalised by `norm` (or None) and read only by `consumer`."""

    producer: str
    norm: str | None
    consumer: str
    channels: int


def _prunable_conv(module: nn.Module) -> bool:
    """A plain dense conv: its channels can be sliced without touching any other parameter."""
    return type(module) is nn.Conv2d and module.groups == 1


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _channelwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True for a node that maps each channel to the same channel and takes one tensor."""
    if node.op == "call_module":
        module = modules[str(node.target)]
        if isinstance(module, nn.PReLU) and module.num_parameters != 1:
            return False
        return type(module) in CHANNELWISE_MODULES
    if node.op == "call_function":
        return node.target in CHANNELWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in CHANNELWISE_METHODS
    return False


def trace(model: nn.Module) -> fx.GraphModule:
    """The model's torch.fx graph, or a one-line error when it cannot be traced."""
    try:
        return fx.symbolic_trace(model)
    except Exception as error:  # fx raises many types for untraceable Python
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HT2Error(
            f"channel pruning needs a model torch.fx can trace, and {type(model).__name__} "
            f"cannot be: {first}"
        ) from None


def find_channel_chains(model: nn.Module) -> list[ChannelChain]:
    """Every producer -> [BatchNorm2d] -> channel-wise layers -> consumer chain of `model`, in
    graph order. A conv or BatchNorm called more than once is never part of a chain."""
    graph = trace(model)
    modules = dict(graph.named_modules())
    calls = Counter(str(node.target) for node in graph.graph.nodes if node.op == "call_module")
    chains = []
    for node in graph.graph.nodes:
        if node.op != "call_module" or not _prunable_conv(modules[str(node.target)]):
            continue
        chain = _follow(node, modules, calls)
        if chain is not None:
            chains.append(chain)
    return chains


def _follow(start: fx.Node, modules: dict[str, nn.Module], calls: Counter) -> ChannelChain | None:
    """The chain that starts at the conv `start`, or None when its channels go anywhere else."""
    producer = str(start.target)
    if calls[producer] != 1:
        return None
    norm = None
    node = _single_user(start)
    if node is not None and node.op == "call_module":
        module = modules[str(node.target)]
        if type(module) is nn.BatchNorm2d and calls[str(node.target)] == 1:
            norm = str(node.target)
            node = _single_user(node)
    while node is not None and _channelwise(node, modules) and len(node.all_input_nodes) == 1:
        node = _single_user(node)  # channel-wise layers hold no per-channel state: may be shared
    if node is None or node.op != "call_module" or len(node.all_input_nodes) != 1:
        return None
    consumer = str(node.target)
    if not _prunable_conv(modules[consumer]) or calls[consumer] != 1:
        return None
    return ChannelChain(producer, norm, consumer, modules[producer].out_channels)
