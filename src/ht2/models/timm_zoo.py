"""Models from timm, named 'timm/<name>', available when the optional timm package is installed."""

from __future__ import annotations

import difflib
import functools
import importlib.util
import math
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.models.entry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry
from ht2.models.published import hf_state_dict, hub_state_dict

PREFIX = "timm/"
# What timm looks for in a Hugging Face repo without a named file: safetensors, then the pickle.
HF_FILES = ("model.safetensors", "pytorch_model.bin")


def _timm() -> ModuleType:
    try:
        import timm
    except ImportError:
        raise HT2Error("timm models need timm: pip install 'ht2[timm]'") from None
    return timm


def timm_entry(name: str) -> ModelEntry:
    """The entry of 'timm/<name>', with input size and normalisation from timm's config."""
    timm = _timm()
    arch = name.removeprefix(PREFIX)
    if not arch or not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"did you mean: {', '.join(PREFIX + c for c in close)}? " if close else ""
        raise HT2Error(f"unknown timm model '{arch}'; {hint}(see timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(arch)
    size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    crop = cfg.crop_pct if cfg is not None and cfg.crop_pct else 0.875
    canonical = PREFIX + arch
    return ModelEntry(
        name=canonical,
        input_size=size,  # type: ignore[arg-type]
        mean=tuple(cfg.mean) if cfg is not None else IMAGENET_MEAN,  # type: ignore[arg-type]
        std=tuple(cfg.std) if cfg is not None else IMAGENET_STD,  # type: ignore[arg-type]
        num_classes=cfg.num_classes if cfg is not None and cfg.num_classes else 1000,
        family="imagenet",
        resize=math.floor(size[-1] / crop),
        build=functools.partial(build_timm, arch),
        pretrained=functools.partial(pretrained_timm, arch),
    )


def build_timm(arch: str, **kwargs: Any) -> nn.Module:
    """Build timm model `arch` with random weights."""
    return _timm().create_model(arch, pretrained=False, **kwargs)


def pretrained_timm(arch: str, kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Build timm model `arch` with its published weights, fetched and checked by ht2.

    ht2 fetches, hash-checks and reads the weights (`published_state_dict`); timm then loads
    them through its own state-dict pass-through (pretrained_cfg's `state_dict`), so its
    per-model filters and its classifier and input-channel adaptation still apply.
    """
    timm = _timm()
    state = published_state_dict(arch)
    model = timm.create_model(
        arch, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs
    )
    model.pretrained_cfg.pop("state_dict", None)  # drop the reference: it holds every tensor
    return model, dict(kwargs)


def published_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The weights timm publishes for `arch`, checked and read without running code.

    The source is timm's: the Hugging Face repo when the config names one (safetensors first),
    else the URL, kept in torch hub's cache. Weights only timm's own custom reader understands
    (JAX .npz files and the like) cannot be checked that way and are refused.
    """
    cfg = _timm().models.get_pretrained_cfg(arch)
    what = f"timm's pretrained weights for '{PREFIX}{arch}'"
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise HT2Error(
            f"timm publishes no pretrained weights for '{PREFIX}{arch}'; "
            "pass weights=FILE or weights=None",
            params=("weights=FILE", "weights=None"),
        )
    has_hf_hub = importlib.util.find_spec("huggingface_hub") is not None
    if cfg.hf_hub_id and cfg.custom_load != "hf" and has_hf_hub:
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_FILES
        return hf_state_dict(cfg.hf_hub_id, files, what)
    if cfg.url and not cfg.custom_load:
        return hub_state_dict(cfg.url, what)
    if cfg.hf_hub_id and not has_hf_hub:
        raise HT2Error(f"{what} are on the Hugging Face hub: pip install huggingface_hub")
    raise HT2Error(
        f"{what} need timm's own reader, which ht2 cannot check; pass weights=FILE "
        "(a state dict or .safetensors) or weights=None",
        params=("weights=FILE", "weights=None"),
    )
