"""Walk any nn.Module: the layers a compression may touch, and which conv sees the input first."""

from __future__ import annotations

import torch
from torch import nn

from ht2.layers import ConvSpec, FactorizedLayer, LinearSpec, effective_spec
from ht2.metrics.observe import observe
from ht2.surgery.policy import is_candidate


def candidate_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and Linear layers by qualified name, skipping the insides of factorized modules."""
    found: list[tuple[str, nn.Module]] = []
    factorized: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in factorized):
            continue
        if isinstance(module, FactorizedLayer):
            factorized.append(name)
        elif is_candidate(module):
            found.append((name, module))
    return found


def first_conv_name(model: nn.Module, example_input: torch.Tensor | None) -> str | None:
    """The first Conv2d (or subclass) that sees the input: by execution order when an input
    is given, else in module order."""
    convs = {m: name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if example_input is None:
        return next(iter(convs.values()), None)
    order: list[str] = []
    observe(model, example_input, [(m, lambda m, i, o: order.append(convs[m])) for m in convs])
    return order[0] if order else None


def spec_of(module: nn.Module) -> ConvSpec | LinearSpec:
    """The JSON-friendly description of a Conv2d or Linear: of the plain layer it computes
    like, for a subclass (ht2.layers.effective_spec; UnsupportedLayer where there is none)."""
    return effective_spec(module)


def input_shapes(
    model: nn.Module, example_input: torch.Tensor, modules: list[nn.Module]
) -> dict[nn.Module, tuple[int, ...]]:
    """The input shape each of `modules` sees in one forward pass of `example_input`."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module, inputs):
        shapes.setdefault(module, tuple(inputs[0].shape))

    observe(model, example_input, [(m, record) for m in modules], before=True)
    return shapes
