"""Handlers keyed by (method, layer type): decompose a dense layer, or rebuild from a plan."""

from __future__ import annotations

from typing import Any

from torch import nn

from ht2.decomp import HT2Ranks, Tucker2Ranks
from ht2.errors import HT2Error
from ht2.layers.base import FactorizedLayer
from ht2.layers.cp_conv import CPConv2d
from ht2.layers.effective import effective_layer
from ht2.layers.ht2_conv import HT2Conv2d
from ht2.layers.spatial_svd_conv import SpatialSVDConv2d
from ht2.layers.spec import ConvSpec, LinearSpec, spec_from_dict
from ht2.layers.svd_conv import SVDConv2d
from ht2.layers.svd_linear import SVDLinear
from ht2.layers.tucker2_conv import Tucker2Conv2d

_HANDLERS: dict[tuple[str, type], type[FactorizedLayer]] = {
    ("ht2", nn.Conv2d): HT2Conv2d,
    ("tucker2", nn.Conv2d): Tucker2Conv2d,
    ("spatial_svd", nn.Conv2d): SpatialSVDConv2d,
    ("cp", nn.Conv2d): CPConv2d,
    ("svd", nn.Conv2d): SVDConv2d,
    ("svd", nn.Linear): SVDLinear,
}
_SPEC_TYPES = {ConvSpec: nn.Conv2d, LinearSpec: nn.Linear}
_REFINABLE = (HT2Conv2d, Tucker2Conv2d)  # the others are optimal already (SVD) or iterate (CP)


def _handler(method: str, layer_type: type) -> type[FactorizedLayer]:
    try:
        return _HANDLERS[(method, layer_type)]
    except KeyError:
        raise ValueError(f"method {method!r} does not apply to {layer_type.__name__}") from None


def _typed_ranks(handler: type[FactorizedLayer], ranks: dict[str, int]) -> dict[str, Any]:
    if handler is HT2Conv2d:
        return {"ranks": HT2Ranks(int(ranks["r1"]), int(ranks["r13"]), int(ranks["r3"]))}
    if handler is Tucker2Conv2d:
        return {"ranks": Tucker2Ranks(int(ranks["r_in"]), int(ranks["r_out"]))}
    return {"rank": int(ranks["r"])}


def factorize(
    layer: nn.Module,
    method: str,
    energy: float | None = None,
    ranks: dict[str, int] | None = None,
    sweeps: int = 0,
) -> FactorizedLayer:
    """Decompose a Conv2d/Linear (or a subclass: what its forward computes) by `method`,
    ranks from `energy` or given.

    `sweeps` rounds of alternating least squares refine HT-2 and Tucker-2 factors at the same
    ranks (lower weight error); SVD is optimal already and CP fits iteratively anyway.
    UnsupportedLayer (an HT2Error) says why a subclass has no plain equivalent.
    """
    effective = effective_layer(layer)
    handler = _handler(method, _SPEC_TYPES[type(effective.spec)])
    extra = {"sweeps": sweeps} if sweeps and handler in _REFINABLE else {}
    if ranks is not None:
        factorized = handler.from_dense(effective.dense, **_typed_ranks(handler, ranks), **extra)
    else:
        factorized = handler.from_dense(effective.dense, energy=energy, **extra)
    factorized.spec = effective.spec  # with the flags a plain layer's own spec lacks
    return factorized


def build_factorized(entry: dict[str, Any]) -> FactorizedLayer:
    """An untrained factorized module with the structure a plan entry describes.

    The entry's "form" (absent in older plans: the method's default) picks how it runs.
    """
    spec = spec_from_dict(entry["layer"])
    handler = _handler(entry["method"], _SPEC_TYPES[type(spec)])
    typed = _typed_ranks(handler, entry["ranks"])
    energy = entry.get("energy")
    form = entry.get("form", handler.default_form)
    if form == handler.default_form:
        return handler(spec, *typed.values(), energy=energy)
    if form in handler.forms:
        return handler(spec, *typed.values(), energy=energy, form=form)
    known = ", ".join(handler.forms or (handler.default_form,))
    raise HT2Error(f"unknown form {form!r} for method {entry['method']!r} in plan; known: {known}")
