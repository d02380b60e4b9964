"""Run a model only as far as one layer and catch what that layer sees or produces."""

from __future__ import annotations

import torch
from torch import nn


class _Reached(Exception):
    """Raised by a hook to stop the forward pass once the layer of interest has run."""


def layer_input_output(
    model: nn.Module, name: str, images: torch.Tensor, want_output: bool
) -> torch.Tensor:
    """The input (or output) of `model`'s submodule `name` on `images`, stopping right there.

    Only the part of the network up to that layer runs. Eval mode and no gradients are the
    caller's business.
    """
    layer = model.get_submodule(name)
    caught: list[torch.Tensor] = []

    def hook(module, inputs, output=None):
        caught.append(output if want_output else inputs[0])
        raise _Reached

    handle = (
        layer.register_forward_hook(hook) if want_output else layer.register_forward_pre_hook(hook)
    )
    try:
        model(images)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not caught:
        raise RuntimeError(f"layer {name} did not run in the forward pass")
    return caught[0]


def forward_order(model: nn.Module, names: list[str], example: torch.Tensor) -> list[str]:
    """`names` sorted by when each layer first runs; layers that never run are dropped."""
    wanted = {model.get_submodule(name): name for name in names}
    order: list[str] = []

    def hook(module, inputs):
        name = wanted[module]
        if name not in order:
            order.append(name)

    handles = [module.register_forward_pre_hook(hook) for module in wanted]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return order
