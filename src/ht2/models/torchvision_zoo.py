"""Torchvision's classification models, built by name, with their published weights on demand."""

from __future__ import annotations

import functools
import os
import re
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.models.entry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry

# Defaults that give a plain classifier: no auxiliary heads, explicit init (no FutureWarning).
_AUX_MODELS = ("googlenet", "inception_v3")
_AUX_DEFAULTS = {"aux_logits": False, "init_weights": True}
_HASH = re.compile(r"-([a-f0-9]*)\.")


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
    """Build torchvision model `name` with its DEFAULT weights; also return rebuild kwargs."""
    import torchvision.models

    weights = torchvision.models.get_model_weights(name).DEFAULT
    _download(name, weights.url)
    call = dict(kwargs)
    call.pop("init_weights", None)  # torchvision forbids init_weights=True with weights
    keep_aux = bool(call.pop("aux_logits", False)) if name in _AUX_MODELS else False
    if keep_aux:
        call["aux_logits"] = True
    try:
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


def _download(name: str, url: str) -> None:
    """Fetch url into torch's hub cache (where torchvision looks) unless it is already there."""
    filename = os.path.basename(urlparse(url).path)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if os.path.exists(cached):
        return
    match = _HASH.search(filename)
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        torch.hub.download_url_to_file(url, cached, match.group(1) if match else None)
    except (URLError, OSError, RuntimeError):
        raise HT2Error(
            f"could not download torchvision's pretrained weights for '{name}' (offline?): "
            "pass --weights FILE or --random-init"
        ) from None
