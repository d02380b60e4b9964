"""Check a saved ht2.json in full before anything is built from it.

A compressed folder may be damaged, hand-edited or hostile: every field of the manifest is
checked first (types, names, methods, ranks within what each factorization can use; each entry
is built once on the meta device, which costs nothing), the architecture's counts against the
tensor file's header, then the plan against the built architecture. A bad folder costs one
line of error and no memory beyond the architecture itself.

Each rank's bound is the largest rank the decomposition itself can produce, as the method's
MethodSpec.bounds says (ht2.layers.registry; the rules sit beside each layer class: for a conv
of T out, C in channels and a D1 x D2 kernel, HT-2's r1 <= min(C, D1 T D2), for instance).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ht2.errors import HT2Error
from ht2.io.names import layer_name_problem
from ht2.layers import ConvSpec, LinearSpec, build_factorized, layer_kind, spec_from_dict
from ht2.layers.registry import method_names, method_spec
from ht2.surgery.plan import _spec_of

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_COUNT_KWARGS = ("num_classes", "in_chans", "in_channels")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _entry_error(where: str, label: str, problem: str) -> HT2Error:
    if Path(where).name == "ht2.json":
        hint = "the folder is damaged or was edited"
    else:
        hint = "fix that entry, or write the plan again with `ht2 compress --plan-only`"
    return HT2Error(f"{where}: {label}: {problem}; {hint}")


def check_arch(arch: Any, where: str) -> None:
    """The manifest's "arch": null (a model outside the registry) or {name, kwargs, weights},
    each keyword argument a finite JSON value and class/channel counts positive integers."""
    if arch is None:
        return
    if not isinstance(arch, dict):
        raise HT2Error(f'{where}: "arch" must be an object or null, got {type(arch).__name__}')
    name = arch.get("name")
    if not isinstance(name, str) or not name.strip():
        raise HT2Error(f'{where}: arch.name must be a model name such as "cifar10_resnet20"')
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise HT2Error(f"{where}: arch.kwargs must be an object, got {type(kwargs).__name__}")
    for key, value in kwargs.items():
        problem = _kwarg_problem(key, value)
        if problem:
            raise HT2Error(f"{where}: arch.kwargs.{key}: {problem}")


def _kwarg_problem(key: str, value: Any) -> str | None:
    if key in _COUNT_KWARGS and not (_is_int(value) and value >= 1):
        return f"must be a positive integer, got {value!r}"
    if "drop" in key and _is_number(value) and not 0 <= value < 1:
        return f"a dropout rate must be in [0, 1), got {value!r}"
    if not _finite_json(value):
        return f"must be a finite JSON value, got {value!r}"
    return None


def _finite_json(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite_json(item) for item in value)
    if isinstance(value, dict):
        return all(_finite_json(item) for item in value.values())
    return value is None or isinstance(value, (str, int, bool))


def check_plan(plan: list[Any], where: str) -> None:
    """Every plan entry well formed, named once, with ranks its layer can hold."""
    seen: set[str] = set()
    for index, entry in enumerate(plan):
        check_entry(entry, index, where)
        if entry["name"] in seen:
            raise _entry_error(where, f"plan entry {index} ({entry['name']})", "named twice")
        seen.add(entry["name"])


MAX_REFINE_SWEEPS = 1000


def check_plan_document(data: Any, where: str) -> None:
    """A plan file (ht2.Plan.to_json): format, version, model, method, provenance, the layer
    entries as check_entry reads them plus their fit and refine sweeps, and the dense map."""
    from ht2.surgery.plan_model import FITS, PLAN_FORMAT, PLAN_VERSION

    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise HT2Error(f'{where}: not an ht2 plan (no "format": "{PLAN_FORMAT}")')
    version = data.get("format_version")
    if not _is_int(version) or version < 1:
        raise HT2Error(f"{where}: format_version {version!r} is not a whole number from 1")
    if version > PLAN_VERSION:
        raise HT2Error(
            f"{where}: format_version {version} is newer than this ht2 reads "
            f"({PLAN_VERSION}): upgrade ht2"
        )
    for key in ("model", "method"):
        if not isinstance(data.get(key), str):
            raise HT2Error(f'{where}: "{key}" must be a string, got {json_type(data.get(key))}')
    check_provenance(data.get("provenance", {}), where)
    dense = data.get("dense", {})
    if not isinstance(dense, dict) or not all(isinstance(v, str) for v in dense.values()):
        raise HT2Error(f'{where}: "dense" must map layer names to reasons')
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise HT2Error(f'{where}: "layers" must be a list of layer entries')
    check_plan(layers, where)
    for index, entry in enumerate(layers):
        label = f"plan entry {index} ({entry['name']})"
        if entry.get("fit", "plain") not in FITS:
            raise _entry_error(
                where, label, f"fit {entry.get('fit')!r} is unknown; known: {', '.join(FITS)}"
            )
        sweeps = entry.get("refine_sweeps", 0)
        if not _is_int(sweeps) or not 0 <= sweeps <= MAX_REFINE_SWEEPS:
            raise _entry_error(
                where, label, f"refine_sweeps must be a whole number 0-{MAX_REFINE_SWEEPS}"
            )
        unrounded = entry.get("unrounded")
        if unrounded is not None and not (
            isinstance(unrounded, dict)
            and set(unrounded) == set(entry["ranks"])
            and all(_is_int(v) and v >= 1 for v in unrounded.values())
        ):
            raise _entry_error(where, label, "unrounded must hold the same ranks, each from 1")
        if entry["name"] in dense:
            raise _entry_error(where, label, "is also listed as dense")


def check_provenance(provenance: Any, where: str) -> None:
    """The fields of a plan's provenance that apply and the data-aware fit read."""
    if not isinstance(provenance, dict):
        raise HT2Error(f'{where}: "provenance" must be an object')
    checks = {
        "round_ranks": lambda v: _is_int(v) and 1 <= v <= 2**31 - 1,
        "refine_sweeps": lambda v: _is_int(v) and 0 <= v <= MAX_REFINE_SWEEPS,
        "energy": lambda v: v is None or (_is_number(v) and 0 < v <= 1),
        "keep_if_larger": lambda v: isinstance(v, bool),
        "rank_rule": lambda v: isinstance(v, str),
        "include": lambda v: (
            v is None or (isinstance(v, list) and all(isinstance(p, str) for p in v))
        ),
        "exclude": lambda v: (
            v is None or (isinstance(v, list) and all(isinstance(p, str) for p in v))
        ),
        "target": _is_target,
    }
    for key, valid in checks.items():
        if key in provenance and not valid(provenance[key]):
            raise HT2Error(f"{where}: provenance.{key} = {provenance[key]!r} is not valid")


def _is_target(value: Any) -> bool:
    """A size target as asked for (kind and factor: the spectrum and sensitivity planners) or
    as reached (ht2.surgery.targets, .allocate), with every field the report prints; None or
    {} for none."""
    if not value:
        return value is None or value == {}
    if not isinstance(value, dict) or value.get("kind") not in ("params", "macs"):
        return False
    if "reached" not in value:
        return (
            set(value) == {"kind", "factor"} and _is_number(value["factor"]) and value["factor"] > 0
        )
    positive = all(_is_number(value.get(k)) and value[k] > 0 for k in ("factor", "reached"))
    met = value.get("met")
    note = value.get("note", "" if met is True else None)  # a missed target says why
    allocation = value.get("allocation", "uniform")
    after_forms = value.get("reached_after_forms")
    return (
        positive
        and isinstance(met, bool)
        and isinstance(note, str)
        and isinstance(allocation, str)
        and (allocation != "uniform" or _is_number(value.get("energy")))
        and (after_forms is None or _is_number(after_forms))
    )


ENTRY_FIELDS = frozenset(
    ("name", "method", "ranks", "layer", "energy", "form", "fit", "refine_sweeps", "unrounded")
)


def check_entry(entry: Any, index: int, where: str) -> None:
    """One plan entry: {name, method, ranks, layer[, energy, form]}, each field checked, then
    built on the meta device (no memory) so the layer's own checks run too."""
    label = f"plan entry {index}"
    if not isinstance(entry, dict):
        raise _entry_error(
            where, label, f"is {json_type(entry)}, not an object with name, method, ranks, layer"
        )
    if "name" not in entry:
        raise _entry_error(where, label, '"name" is missing')
    problem = layer_name_problem(entry["name"])
    if problem:
        raise _entry_error(where, label, f"name {problem}")
    label = f"{label} ({entry['name']})"
    unknown = sorted(set(entry) - ENTRY_FIELDS)
    if unknown:  # a misspelt "fit" or "form" would otherwise be ignored without a word
        raise _entry_error(
            where,
            label,
            f"unknown field(s) {', '.join(map(repr, unknown))}; known: "
            f"{', '.join(sorted(ENTRY_FIELDS))}",
        )
    for field in ("method", "ranks", "layer"):
        if field not in entry:
            raise _entry_error(where, label, f'"{field}" is missing')
    spec = _spec(entry["layer"], where, label)
    method = entry["method"]
    if not isinstance(method, str) or method not in method_names():
        raise _entry_error(
            where, label, f"method {method!r} is unknown; known: {', '.join(method_names())}"
        )
    if layer_kind(spec) not in method_spec(method).layers:
        raise _entry_error(
            where, label, f"method {method!r} does not apply to a {layer_kind(spec)} layer"
        )
    if isinstance(spec, ConvSpec) and spec.groups != 1:
        raise _entry_error(where, label, f"layer.groups is {spec.groups}; factorized convs need 1")
    _check_ranks(entry["ranks"], method, spec, where, label)
    energy = entry.get("energy")
    if energy is not None and not (_is_number(energy) and 0 < energy <= 1):
        raise _entry_error(where, label, f"energy must be in (0, 1] or null, got {energy!r}")
    if "form" in entry and not isinstance(entry["form"], str):
        raise _entry_error(where, label, f"form must be a string, got {entry['form']!r}")
    try:
        with torch.device("meta"):
            build_factorized(entry)
    except (HT2Error, ValueError) as error:  # the layer's own refusal, such as a bad form
        raise _entry_error(where, label, str(error)) from None


def json_type(value: Any) -> str:
    """A JSON value's kind as a person reads it: a string "x", a number, a list, null."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"a string {value!r}"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _spec(layer: Any, where: str, label: str) -> ConvSpec | LinearSpec:
    """The layer spec of an entry, every field of the right type and range."""
    if not isinstance(layer, dict) or layer.get("type") not in ("Conv2d", "Linear"):
        raise _entry_error(where, label, 'layer must be an object with "type" Conv2d or Linear')
    if layer["type"] == "Linear":
        fields = {"in_features": _positive, "out_features": _positive, "bias": _boolean}
    else:
        fields = {
            "in_channels": _positive,
            "out_channels": _positive,
            "kernel_size": _positive_pair,
            "stride": _positive_pair,
            "padding": _padding,
            "dilation": _positive_pair,
            "groups": _positive,
            "bias": _boolean,
            "padding_mode": lambda v: v in _PADDING_MODES,
        }
    flags = [flag for flag in ("pad_same", "derived_weight") if flag in layer]
    fields.update({flag: _boolean for flag in flags})
    for field, valid in fields.items():
        if field not in layer:
            raise _entry_error(where, label, f"layer.{field} is missing")
        if not valid(layer[field]):
            raise _entry_error(where, label, f"layer.{field} = {layer[field]!r} is not valid")
    return spec_from_dict(layer)


def _positive(value: Any) -> bool:
    return _is_int(value) and value >= 1


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _positive_pair(value: Any) -> bool:
    if _is_int(value):
        return value >= 1
    return isinstance(value, list) and len(value) == 2 and all(_positive(v) for v in value)


def _padding(value: Any) -> bool:
    if isinstance(value, str):
        return value in ("same", "valid")
    if _is_int(value):
        return value >= 0
    return isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v >= 0 for v in value)


def _check_ranks(
    ranks: Any, method: str, spec: ConvSpec | LinearSpec, where: str, label: str
) -> None:
    keys = method_spec(method).rank_keys
    if not isinstance(ranks, dict) or set(ranks) != set(keys):
        got = ", ".join(sorted(map(str, ranks))) if isinstance(ranks, dict) else json_type(ranks)
        raise _entry_error(where, label, f"ranks of {method} must be {', '.join(keys)}; got {got}")
    for key in keys:
        if not _positive(ranks[key]):
            raise _entry_error(
                where, label, f"ranks.{key} must be a positive integer, got {ranks[key]!r}"
            )
    for key, (bound, why) in rank_bounds(method, spec, ranks).items():
        if ranks[key] > bound:
            raise _entry_error(
                where, label, f"ranks.{key} = {ranks[key]} is above its bound {bound} ({why})"
            )


def rank_bounds(
    method: str, spec: ConvSpec | LinearSpec, ranks: Mapping[str, int]
) -> dict[str, tuple[int, str]]:
    """The largest value of each rank of `method` on `spec` (given the other `ranks`), with
    the rule that sets it: what the decomposition can produce (module docstring)."""
    return method_spec(method).bounds(spec, ranks)


def check_plan_fits(model: nn.Module, plan: list[dict[str, Any]], where: str) -> None:
    """Each planned layer exists in `model` and computes like the planned spec (a subclass
    of Conv2d/Linear: like the plain layer its forward amounts to, as apply_plan reads it)."""
    for index, entry in enumerate(plan):
        name = entry["name"]
        try:
            current = model.get_submodule(name)
        except AttributeError:
            raise HT2Error(
                f"{where}: plan entry {index}: the plan names layer '{name}', which the "
                f"{type(model).__name__} model does not have"
            ) from None
        expected = spec_from_dict(entry["layer"])
        found = _spec_of(current)  # the very reading apply_plan makes
        if found != expected:
            raise HT2Error(
                f"{where}: plan entry {index}: the plan does not fit the model at '{name}': "
                f"{spec_difference(expected, found, type(current).__name__)}"
            )


def spec_difference(
    planned: ConvSpec | LinearSpec, found: ConvSpec | LinearSpec | None, found_type: str
) -> str:
    """Only the hyper-parameters that differ, so the line stays short: "Conv2d differs:
    kernel_size planned (9, 9), found (3, 3)"; the layer kinds when they differ."""
    if found is None or type(found) is not type(planned):
        return f"planned a {layer_kind(planned)} layer, found {found_type}"
    changes = [
        f"{field.name} planned {getattr(planned, field.name)!r}, "
        f"found {getattr(found, field.name)!r}"
        for field in dataclasses.fields(planned)
        if getattr(planned, field.name) != getattr(found, field.name)
    ]
    return f"{found_type} differs: {'; '.join(changes)}"


def tensor_shapes(path: Path) -> dict[str, torch.Size]:
    """The name and shape of every tensor in a safetensors file, from its header alone."""
    if not path.is_file():
        raise HT2Error(f"{path} is missing")
    try:
        with safe_open(str(path), framework="pt") as tensors:
            names = tensors.keys()
            return {name: torch.Size(tensors.get_slice(name).get_shape()) for name in names}
    except (SafetensorError, OSError, ValueError) as error:
        raise HT2Error(f"{path} cannot be read (truncated or not safetensors): {error}") from None


def check_counts_in_file(
    arch: dict[str, Any], shapes: Mapping[str, torch.Size], where: str
) -> None:
    """Each count among the architecture's options (num_classes, in_chans, in_channels) must
    be a dimension of some tensor in the file (a classifier has num_classes rows), so a
    manifest asking for 10**9 classes is refused before the model is built, not after it
    has taken the memory."""
    dimensions = {size for shape in shapes.values() if 0 not in shape for size in shape}
    for key in _COUNT_KWARGS:
        value = arch.get("kwargs", {}).get(key)
        if value is not None and value not in dimensions:
            raise HT2Error(
                f"{where}: arch.kwargs.{key} is {value}, but no tensor of the saved model has "
                "that size; the folder is damaged or was edited"
            )
