"""Models from timm, named 'timm/<name>', available when the optional timm package is installed."""

from __future__ import annotations

import difflib
import functools
import math
from types import ModuleType
from typing import Any
from urllib.error import URLError

from torch import nn

from ht2.errors import HT2Error
from ht2.models.entry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry

PREFIX = "timm/"


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
    """Build timm model `arch` with its published weights (downloaded by timm)."""
    try:
        model = _timm().create_model(arch, pretrained=True, **kwargs)
    except (URLError, OSError, RuntimeError):
        raise HT2Error(
            f"could not download timm's pretrained weights for '{PREFIX}{arch}' (offline?): "
            "pass --weights FILE or --random-init"
        ) from None
    return model, dict(kwargs)
