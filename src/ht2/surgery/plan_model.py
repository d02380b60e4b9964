"""The Plan: what compression will do to each layer, decided before anything is changed.

A Plan is plain data (JSON in, JSON out): per layer the decomposition, its ranks, how the
factors run, how they are fitted and refined, and why any other layer stays dense; plus where
the decisions came from (rank rule, energy or target, allocator, data). `ht2.plan` makes one,
`ht2.apply` carries it out exactly, and `ht2 compress --plan FILE` replays an edited one.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ht2.errors import BAD_JSON, HT2Error

PLAN_FORMAT = "ht2-plan"
PLAN_VERSION = 1
FITS = ("plain", "data-aware")


@dataclass
class LayerPlan:
    """One layer to replace: its handler (ht2, tucker2, cp, svd, spatial_svd), ranks, the
    energy they keep (None: given or VBMF), the execution form (None: the handler's default),
    the fit ("plain" factors or "data-aware") and the ALS refine sweeps; `layer` is the dense
    layer's spec, so that a plan only applies to the layers it was made for."""

    name: str
    method: str
    ranks: dict[str, int]
    layer: dict[str, Any]
    energy: float | None = None
    form: str | None = None
    fit: str = "plain"
    refine_sweeps: int = 0
    unrounded: dict[str, int] | None = None  # the ranks before round_ranks changed them

    def entry(self) -> dict[str, Any]:
        """The plan entry that ht2.json and ht2.layers.build_factorized read."""
        entry: dict[str, Any] = {
            "name": self.name,
            "method": self.method,
            "ranks": dict(self.ranks),
            "energy": self.energy,
            "layer": self.layer,
        }
        if self.form is not None:
            entry["form"] = self.form
        return entry

    def to_dict(self) -> dict[str, Any]:
        data = self.entry()
        data.update(fit=self.fit, refine_sweeps=self.refine_sweeps)
        if self.unrounded is not None:
            data["unrounded"] = dict(self.unrounded)
        return data


@dataclass
class Plan:
    """Every layer's decision for one model. `dense` maps each layer considered and left
    dense to the reason; `provenance` records how the ranks were chosen."""

    model: str
    method: str
    layers: list[LayerPlan] = field(default_factory=list)
    dense: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    # Factors already computed while planning, reused by apply while the layer and its weights
    # are unchanged (not saved: a plan read from JSON recomputes them).
    _built: dict[str, tuple[LayerPlan, list[torch.Tensor], nn.Module]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def ranks(self) -> dict[str, dict[str, int]]:
        """Layer name -> ranks: the map `--ranks` files and `layer_ranks=` take."""
        return {layer.name: dict(layer.ranks) for layer in self.layers}

    def layer(self, name: str) -> LayerPlan:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "format_version": PLAN_VERSION,
            "model": self.model,
            "method": self.method,
            "provenance": _jsonable(self.provenance),
            "layers": [layer.to_dict() for layer in self.layers],
            "dense": dict(self.dense),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = "plan") -> Plan:
        """The plan in `data`, every field checked first (one HT2Error naming the entry)."""
        from ht2.io.plan_check import check_plan_document  # io reads plans; it sits above

        check_plan_document(data, where)
        layers = [
            LayerPlan(
                name=item["name"],
                method=item["method"],
                ranks={key: int(value) for key, value in item["ranks"].items()},
                layer=item["layer"],
                energy=item.get("energy"),
                form=item.get("form"),
                fit=item.get("fit", "plain"),
                refine_sweeps=int(item.get("refine_sweeps", 0)),
                unrounded=item.get("unrounded"),
            )
            for item in data["layers"]
        ]
        return cls(
            model=data["model"],
            method=data["method"],
            layers=layers,
            dense=dict(data.get("dense", {})),
            provenance=dict(data.get("provenance", {})),
        )

    @classmethod
    def from_json(cls, text: str, where: str = "plan") -> Plan:
        try:
            data = json.loads(text)
        except BAD_JSON as error:
            raise HT2Error(f"{where}: not a JSON plan ({error})") from None
        return cls.from_dict(data, where)

    def remember(self, layer: LayerPlan, dense: nn.Module, factors: nn.Module) -> None:
        """Keep the factors computed for `layer` from the module `dense`, for apply to reuse."""
        self._built[layer.name] = (copy.deepcopy(layer), _state_of(dense), factors)

    def recall(self, layer: LayerPlan, dense: nn.Module) -> nn.Module | None:
        """A copy of the plain factors computed while planning (in the handler's default form),
        if `layer` (but for its fit and form) and the tensors of `dense` are still what they
        were; None otherwise (an edited plan, other weights)."""
        built = self._built.get(layer.name)
        if built is None:
            return None
        planned, state, factors = built
        now = _state_of(dense)
        same = len(now) == len(state) and all(
            a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b.to(a.device))
            for a, b in zip(state, now, strict=True)
        )
        if replace(planned, fit=layer.fit, form=layer.form) != layer or not same:
            return None
        device = next((t.device for t in dense.state_dict().values()), torch.device("cpu"))
        return copy.deepcopy(factors).to(device)


def model_name(model: nn.Module) -> str:
    """The registry name of `model` when it has one, else its class name (what Plan.model
    records, and what apply checks a plan against)."""
    arch = getattr(model, "ht2_arch", None)
    return arch["name"] if isinstance(arch, dict) else type(model).__name__


def _state_of(module: nn.Module) -> list[torch.Tensor]:
    return [tensor.detach().clone() for tensor in module.state_dict().values()]


def json_layer(spec: dict[str, Any]) -> dict[str, Any]:
    """A layer spec as JSON reads it back (tuples as lists), so plans compare equal."""
    return json.loads(json.dumps(spec))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    return value
