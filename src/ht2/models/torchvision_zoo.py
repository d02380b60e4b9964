"""Torchvision's classification models, built by name, with their published weights on demand."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.models.entry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry
from ht2.models.published import hub_state_dict

# Defaults that give a plain classifier: no auxiliary heads, explicit init (no FutureWarning).
_AUX_MODELS = ("googlenet", "inception_v3")
_AUX_DEFAULTS = {"aux_logits": False, "init_weights": True}


@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """Names of torchvision's classification models (torchvision.models only), sorted."""
    import torchvision.models

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def torchvision_entry(name: str) -> ModelEntry:
    """The entry of torchvision classification model `name` (which must exist)."""
    size, resize = (299, 342) if name == "inception_v3" else (224, 256)
    return ModelEntry(
        name=name,
        input_size=(3, size, size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_classes=1000,
        family="imagenet",
        resize=resize,
        build=functools.partial(build_torchvision, name),
        pretrained=functools.partial(pretrained_torchvision, name),
    )


def build_torchvision(name: str, **kwargs: Any) -> nn.Module:
    """Build torchvision model `name` with random weights."""
    import torchvision.models

    if name in _AUX_MODELS:
        kwargs = {**_AUX_DEFAULTS, **kwargs}
    return torchvision.models.get_model(name, weights=None, **kwargs)


def pretrained_torchvision(name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Build torchvision model `name` with its DEFAULT weights; also return rebuild kwargs.

    torchvision builds the model and loads the weights itself, so that its per-model fixes
    (DenseNet's old key names, GoogLeNet's and Inception's transform_input and auxiliary heads,
    ViT's image size) keep working; only the reading of the file is ours (`_checked_reading`).
    """
    import torchvision.models

    weights = torchvision.models.get_model_weights(name).DEFAULT
    state = hub_state_dict(weights.url, f"torchvision's pretrained weights for '{name}'")
    call = dict(kwargs)
    call.pop("init_weights", None)  # torchvision forbids init_weights=True with weights
    keep_aux = bool(call.pop("aux_logits", False)) if name in _AUX_MODELS else False
    if keep_aux:
        call["aux_logits"] = True
    try:
        with _checked_reading(weights.url, state):
            model = torchvision.models.get_model(name, weights=weights, **call)
    except (TypeError, ValueError) as exc:
        raise HT2Error(
            f"cannot build {name} with pretrained weights and options {kwargs}: {exc}"
        ) from None
    arch = dict(kwargs)
    if name in _AUX_MODELS:
        if not keep_aux:
            _drop_aux(model)
        arch["transform_input"] = bool(model.transform_input)
    if hasattr(model, "image_size") and isinstance(model.image_size, int):
        arch["image_size"] = model.image_size  # ViT weights may fix a larger resolution
    return model, arch


def _drop_aux(model: nn.Module) -> None:
    model.aux_logits = False
    for attr in ("aux1", "aux2", "AuxLogits"):
        if hasattr(model, attr):
            setattr(model, attr, None)


@contextlib.contextmanager
def _checked_reading(url: str, state: dict[str, torch.Tensor]) -> Iterator[None]:
    """Let torchvision's weights enum receive `state` (read and checked) instead of the file.

    Every torchvision classifier reads its weights through `WeightsEnum.get_state_dict`, which
    calls `load_state_dict_from_url` as imported into torchvision.models._api: torch.hub's, which
    unpickles without weights_only and re-checks no hash once a file is cached. For the call
    that builds the model that name serves `state`, which hub_state_dict checked and read
    without running code; any other URL is an HT2Error, never a fallback to torch.hub.
    """
    from torchvision.models import _api

    def serve(requested: str, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if requested != url:
            raise HT2Error(f"torchvision asked for weights {requested}, not {url}; not loading")
        return state

    original = _api.load_state_dict_from_url
    _api.load_state_dict_from_url = serve
    try:
        yield
    finally:
        _api.load_state_dict_from_url = original
