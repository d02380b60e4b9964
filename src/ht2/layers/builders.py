"""Build factorized layers by method (ht2.layers.registry): decompose a dense layer, or
rebuild one from a plan entry."""

from __future__ import annotations

from typing import Any

from torch import nn

from ht2.errors import HT2Error
from ht2.layers.base import FactorizedLayer
from ht2.layers.effective import effective_layer
from ht2.layers.registry import MethodSpec, method_names, method_spec
from ht2.layers.spec import ConvSpec, LinearSpec, spec_from_dict


def layer_kind(spec: ConvSpec | LinearSpec) -> str:
    """The layer type a spec describes, as plans and MethodSpec.layers name it."""
    return "Linear" if isinstance(spec, LinearSpec) else "Conv2d"


def _handler(method: str, kind: str) -> tuple[MethodSpec, type[FactorizedLayer]]:
    """The method's spec and its layer class for layers of `kind`."""
    facts = method_spec(method) if method in method_names() else None
    if facts is None or kind not in facts.layers:
        raise ValueError(f"method {method!r} does not apply to {kind}")
    return facts, facts.layers[kind]


def factorize(
    layer: nn.Module,
    method: str,
    energy: float | None = None,
    ranks: dict[str, int] | None = None,
    sweeps: int = 0,
) -> FactorizedLayer:
    """Decompose a Conv2d/Linear (or a subclass: what its forward computes) by `method`,
    ranks from `energy` or given.

    `sweeps` rounds of alternating least squares refine the factors of a refinable method
    (HT-2, Tucker-2) at the same ranks (lower weight error); SVD is optimal already and CP
    fits iteratively anyway. UnsupportedLayer (an HT2Error) says why a subclass has no plain
    equivalent.
    """
    effective = effective_layer(layer)
    facts, handler = _handler(method, layer_kind(effective.spec))
    extra = {"sweeps": sweeps} if sweeps and facts.refinable else {}
    if ranks is not None:
        factorized = handler.from_dense(effective.dense, **facts.typed_ranks(ranks), **extra)
    else:
        factorized = handler.from_dense(effective.dense, energy=energy, **extra)
    factorized.spec = effective.spec  # with the flags a plain layer's own spec lacks
    return factorized


def build_factorized(entry: dict[str, Any]) -> FactorizedLayer:
    """An untrained factorized module with the structure a plan entry describes.

    The entry's "form" (absent in older plans: the method's default) picks how it runs.
    """
    spec = spec_from_dict(entry["layer"])
    facts, handler = _handler(entry["method"], layer_kind(spec))
    typed = facts.typed_ranks(entry["ranks"])
    energy = entry.get("energy")
    form = entry.get("form", handler.default_form)
    if form == handler.default_form:
        return handler(spec, *typed.values(), energy=energy)
    if form in handler.forms:
        return handler(spec, *typed.values(), energy=energy, form=form)
    known = ", ".join(handler.forms or (handler.default_form,))
    raise HT2Error(f"unknown form {form!r} for method {entry['method']!r} in plan; known: {known}")
