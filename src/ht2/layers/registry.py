"""Decomposition methods in one registry: each is a MethodSpec next to its layer class.

A method is a module with its FactorizedLayer subclass(es) and a MethodSpec (its rank keys,
rank rules and bounds), plus one `register_method` line here (or in the user's code): then
planning, surgery and plan files know it, and so does the command line's `--method` when it is
registered in the same process before the parser is built. The built-in methods are
registered by module name and imported on first use, so listing the names needs no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ht2.layers.base import FactorizedLayer
    from ht2.layers.spec import ConvSpec, LinearSpec

Ranks = dict[str, int]


def one_rank(ranks: Mapping[str, int]) -> dict[str, Any]:
    """The constructor argument of a method with the single rank "r": `rank=r`."""
    return {"rank": int(ranks["r"])}


@dataclass(frozen=True)
class MethodSpec:
    """What ht2 needs to know of one decomposition method, beside its layer classes.

    layers: the FactorizedLayer subclass per layer type it replaces, by the type's name as a
        plan's "layer" writes it ("Conv2d", "Linear").
    rank_keys: the names of its ranks, as plans and ranks files hold them.
    clip: (ranks, weight shape) -> the ranks a decomposition of that weight really uses.
    bounds: (layer spec, ranks) -> each rank's largest value with the rule that sets it,
        which a plan file is checked against.
    typed_ranks: a ranks dict -> the keyword arguments the layer class takes them as.
    unfoldings: weight -> each rank's matrix, whose energy (or VBMF) sets that rank; None for
        a method whose single rank "r" comes from its fit instead: then `fit_error` (weight,
        rank) -> relative error, bisected by the energy rule up to `max_rank` (weight shape).
    refinable: whether alternating least-squares sweeps refine its factors at fixed ranks.
    """

    title: str
    layers: Mapping[str, type[FactorizedLayer]]
    rank_keys: tuple[str, ...]
    clip: Callable[[Mapping[str, int], Sequence[int]], Ranks]
    bounds: Callable[[ConvSpec | LinearSpec, Mapping[str, int]], dict[str, tuple[int, str]]]
    typed_ranks: Callable[[Mapping[str, int]], dict[str, Any]] = one_rank
    unfoldings: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None
    fit_error: Callable[[torch.Tensor, int], float] | None = None
    max_rank: Callable[[Sequence[int]], int] | None = None
    refinable: bool = False

    def __post_init__(self) -> None:
        if self.unfoldings is None and (
            self.fit_error is None or self.max_rank is None or self.rank_keys != ("r",)
        ):
            raise ValueError(
                f"{self.title}: a method without unfoldings needs the single rank 'r', "
                "fit_error and max_rank"
            )
        if self.unfoldings is None and "Linear" in self.layers:
            raise ValueError(
                f"{self.title}: a method whose rank comes from its fit error (no unfoldings) "
                "replaces Conv2d layers only, as its rank rules read a 4-D weight; drop "
                "'Linear' from layers or give unfoldings"
            )


_SOURCES: dict[str, MethodSpec | str] = {}  # method -> its spec, or the module defining METHOD
_KXK: dict[str, str] = {}  # the name users choose a method by for k x k convs -> the method


def register_method(name: str, spec: MethodSpec | str, kxk: str | None = None) -> None:
    """Make method `name` (a plan's layer kind) known everywhere.

    `spec` is its MethodSpec, or the name of the module that defines it as `METHOD` (imported
    on first use). `kxk` is the name users pick it by for k x k convs: kxk_methods() lists it
    from now on, and so does `--method` of a parser built after this call (ht2.choices.METHODS,
    taken at import, lists only the built-ins). None for a method only the policy picks (SVD:
    first and 1x1 convs, Linear layers).
    """
    if name in _SOURCES:
        raise ValueError(f"a method named {name!r} is registered already")
    if kxk is not None and kxk in _KXK:
        raise ValueError(f"the k x k method name {kxk!r} is taken by {_KXK[kxk]!r}")
    if isinstance(spec, MethodSpec):
        _check_layers(name, spec)
    _SOURCES[name] = spec
    if kxk is not None:
        _KXK[kxk] = name


def unregister_method(name: str) -> None:
    """Forget method `name` (and its k x k name): for tests and plugins that clean up."""
    _SOURCES.pop(name, None)
    for kxk, method in list(_KXK.items()):
        if method == name:
            del _KXK[kxk]


def method_spec(name: str) -> MethodSpec:
    """The MethodSpec of a registered method (its module imported on first use)."""
    try:
        source = _SOURCES[name]
    except KeyError:
        raise ValueError(f"method {name!r} is unknown; known: {', '.join(_SOURCES)}") from None
    if isinstance(source, str):
        spec = importlib.import_module(source).METHOD
        _check_layers(name, spec)
        _SOURCES[name] = source = spec
    return source


def sweeps_refine(method: str) -> bool:
    """Whether refine sweeps change `method`'s factors (not SVD's, optimal already, nor CP's,
    whose fit is iterative anyway); a method not registered here is taken to be refined."""
    try:
        return method_spec(method).refinable
    except ValueError:
        return True


def _check_layers(name: str, spec: MethodSpec) -> None:
    for layer in spec.layers.values():
        if layer.method != name:
            raise ValueError(f"{layer.__name__}.method is {layer.method!r}, registered as {name!r}")


def method_names() -> tuple[str, ...]:
    """Every registered method, as plans name a layer's kind, in registration order."""
    return tuple(_SOURCES)


def kxk_methods() -> tuple[str, ...]:
    """The methods users choose among for k x k convs, by their user-facing names."""
    return tuple(_KXK)


def kxk_method(kxk: str) -> str:
    """The method (a plan's layer kind) that the k x k method name `kxk` stands for."""
    return _KXK[kxk]


register_method("ht2", "ht2.layers.ht2_conv", kxk="ht2")
register_method("tucker2", "ht2.layers.tucker2_conv", kxk="tucker2")
register_method("cp", "ht2.layers.cp_conv", kxk="cp")
register_method("spatial_svd", "ht2.layers.spatial_svd_conv", kxk="spatial-svd")
register_method("svd", "ht2.layers.svd_conv")  # Tucker-1 / Linear SVD, whatever the method
