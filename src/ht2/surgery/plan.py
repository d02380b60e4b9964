"""The replayable plan: which layer became what, enough to rebuild the structure."""

from __future__ import annotations

from typing import Any

from torch import nn

from ht2.errors import HT2Error
from ht2.layers import (
    ConvSpec,
    FactorizedLayer,
    LinearSpec,
    UnsupportedLayer,
    build_factorized,
    effective_spec,
    spec_from_dict,
)


def collect_plan(model: nn.Module) -> list[dict[str, Any]]:
    """Every factorized module of `model` as a plan entry, in module order."""
    return [
        {"name": name, **module.plan_entry()}
        for name, module in model.named_modules()
        if isinstance(module, FactorizedLayer)
    ]


def _spec_of(module: nn.Module) -> ConvSpec | LinearSpec | None:
    """The spec a plan records for `module` (subclasses: what their forward computes like)."""
    try:
        return effective_spec(module)
    except UnsupportedLayer:
        return None


def apply_plan(model: nn.Module, plan: list[dict[str, Any]]) -> nn.Module:
    """Replace, in place, each planned layer of `model` by an (untrained) factorized module.

    Each planned layer must exist and have the hyper-parameters the plan recorded; the
    weights are loaded afterwards from the saved tensors.
    """
    for entry in plan:
        name = entry["name"]
        try:
            current = model.get_submodule(name)
        except AttributeError:
            raise HT2Error(
                f"the plan names layer '{name}', which the model does not have"
            ) from None
        expected = spec_from_dict(entry["layer"])
        found = _spec_of(current)
        if found != expected:
            raise HT2Error(
                f"the plan does not fit the model at '{name}': planned {expected}, "
                f"found {type(current).__name__} {found or ''}".rstrip()
            )
        model.set_submodule(name, build_factorized(entry).to(_device_of(current)))
    return model


def _device_of(module: nn.Module):
    for parameter in module.parameters():
        return parameter.device
    return "cpu"
