"""Model names: lookup (with aliases and suggestions), listing, and building with weights."""

from __future__ import annotations

import difflib
import functools
import json
import os
from typing import Any

from torch import nn

from ht2.errors import HT2Error
from ht2.models.entry import ModelEntry
from ht2.models.own import own_entries
from ht2.models.timm_zoo import PREFIX as TIMM_PREFIX
from ht2.models.timm_zoo import timm_entry
from ht2.models.torchvision_zoo import torchvision_entry, torchvision_names
from ht2.models.weights import load_weights

# Names used by the reference implementation, mapped to canonical names.
ALIASES = {
    "imagenet_resnet18": "resnet18",
    "imagenet_resnet34": "resnet34",
    "imagenet_resnet50": "resnet50",
    "imagenet_googlenet": "googlenet",
    "imagenet_vgg16": "vgg16_bn",
}
PRETRAINED = "pretrained"


@functools.lru_cache(maxsize=1)
def _own() -> dict[str, ModelEntry]:
    return own_entries()


def list_models() -> list[str]:
    """Canonical model names, sorted: this package's models and torchvision's classifiers."""
    return sorted({*_own(), *torchvision_names()})


def get_entry(name: str) -> ModelEntry:
    """The entry of a model name or alias; unknown names raise HT2Error with suggestions."""
    if name.startswith(TIMM_PREFIX):
        return timm_entry(name)
    canonical = ALIASES.get(name, name)
    if canonical in _own():
        return _own()[canonical]
    if canonical in torchvision_names():
        return torchvision_entry(canonical)
    lowered = name.strip().lower()
    if lowered != name:
        return get_entry(lowered)
    close = _close_names(name)
    hint = f"did you mean: {', '.join(close)}? " if close else ""
    raise HT2Error(f"unknown model '{name}'; {hint}(see `ht2 models`)")


def create(name: str, weights: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """Build model `name` in eval mode: random init, a weights file, or weights='pretrained'.

    `kwargs` go to the architecture's builder; the model records them in `model.ht2_arch`
    so that `create(arch["name"], **arch["kwargs"])` rebuilds the same architecture, and the
    weights' source (None, "pretrained" or an absolute path), so a teacher can be rebuilt.
    """
    entry = get_entry(name)
    _check_json(entry.name, kwargs)
    pretrained = isinstance(weights, str) and weights == PRETRAINED
    if pretrained:
        model, arch_kwargs = entry.pretrained(dict(kwargs))
    else:
        model, arch_kwargs = _build(entry, kwargs), dict(kwargs)
    model.ht2_arch = {"name": entry.name, "kwargs": arch_kwargs, "weights": _source(weights)}
    if weights is not None and not pretrained:
        load_weights(model, weights)
    return model.eval()


def _build(entry: ModelEntry, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return entry.build(**kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HT2Error(
            f"cannot build {entry.name} with options {kwargs}: {message}; check the option names"
        ) from None
    except (RuntimeError, MemoryError) as exc:  # options that ask for more memory than there is
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HT2Error(f"cannot build {entry.name} with options {kwargs}: {message}") from None


def _check_json(name: str, kwargs: dict[str, Any]) -> None:
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        raise HT2Error(
            f"options for {name} must be JSON values (numbers, strings, booleans, lists): "
            f"got {kwargs!r}"
        ) from None


def _close_names(name: str) -> list[str]:
    """Up to three known names near `name`, also matching without a family prefix."""
    known = [*list_models(), *ALIASES]
    prefixed = [n for n in known if n.startswith(("cifar10_", "imagenet_"))]
    short = {n.split("_", 1)[1]: n for n in prefixed if n.split("_", 1)[1] not in known}
    scored = difflib.get_close_matches(name, [*known, *short], n=6)
    suggestions = dict.fromkeys(short.get(n, n) for n in scored)
    return list(suggestions)[:3]


def _source(weights: str | os.PathLike[str] | None) -> str | None:
    """Where the weights came from, in a form that still means the same from another folder."""
    if weights is None or weights == PRETRAINED:
        return weights
    return str(os.path.abspath(weights))
