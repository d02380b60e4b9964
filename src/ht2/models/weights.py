"""Reading weight files (torch pickles loaded with weights_only, safetensors) into models."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ht2.errors import HT2Error

TORCH_SUFFIXES = (".pth", ".pt", ".th", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
REMEDY_SAVE = "re-save it as a plain state dict or .safetensors"
REMEDY_DELETE = "delete it to download it again"
_SHOWN_KEYS = 5


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a .pth/.pt/.th/.bin or .safetensors file, 'module.' stripped."""
    file = Path(path)
    if not file.exists():
        raise HT2Error(f"weights file {file} does not exist; check the path")
    if not file.is_file():
        raise HT2Error(f"weights file {file} is not a file; pass the path of a weights file")
    suffix = file.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        obj = _load_torch(file, REMEDY_SAVE)
    elif suffix == SAFETENSORS_SUFFIX:
        obj = _load_safetensors(file)
    else:
        known = ", ".join((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))
        raise HT2Error(
            f"weights file {file} has an unknown suffix '{file.suffix}'; use one of {known}"
        )
    return _extract_state_dict(obj, file)


def read_cached_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read published weights from a download cache: safetensors, else a torch pickle.

    Cached files keep their publisher's name (`resnet18-f37072fd.pth`, `pytorch_model.bin`,
    `x.pth.tar`), so only `.safetensors` decides the format; everything else goes through
    torch.load with weights_only=True, which refuses any pickle that would run code.
    """
    file = Path(path)
    if file.name.lower().endswith(SAFETENSORS_SUFFIX):
        obj = _load_safetensors(file)
    else:
        obj = _load_torch(file, REMEDY_DELETE)
    return _extract_state_dict(obj, file)


def _load_torch(file: Path, remedy: str) -> Any:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc).lower()
        garbage = "unsupported operand" in text and not _starts_like_pickle(file)
        if "weights only" in text and not garbage:
            raise HT2Error(
                f"weights file {file} is a pickle that weights_only loading refuses (it may run "
                f"code); {remedy}"
            ) from None
        raise _corrupt(file, exc) from None
    except PermissionError:
        raise HT2Error(f"weights file {file} cannot be read (permission denied)") from None
    except Exception as exc:  # torch raises many types (RuntimeError, EOFError, KeyError, ...)
        raise _corrupt(file, exc) from None


def _starts_like_pickle(file: Path) -> bool:
    """Whether the file opens with a pickle's PROTO opcode (protocol 2-5): a plain pickle.dump
    file that weights_only loading cannot parse is refused as a pickle, not called corrupt."""
    try:
        with file.open("rb") as stream:
            head = stream.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _load_safetensors(file: Path) -> Any:
    from safetensors.torch import load_file

    try:
        return load_file(file, device="cpu")
    except PermissionError:
        raise HT2Error(f"weights file {file} cannot be read (permission denied)") from None
    except Exception as exc:  # SafetensorError and friends
        raise _corrupt(file, exc) from None


def _corrupt(file: Path, exc: BaseException) -> HT2Error:
    reason = type(exc).__name__
    return HT2Error(
        f"weights file {file} is corrupt or truncated ({reason}); download or save it again"
    )


def _extract_state_dict(obj: Any, file: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if isinstance(key, str) and isinstance(value, torch.Tensor):
                tensors[key.removeprefix("module.")] = value
    if not tensors:
        raise HT2Error(
            f"weights file {file} holds no state dict (no tensors found at the top level or under "
            "'state_dict' or 'model'); save model.state_dict() instead"
        )
    return tensors


def refuse_unusable(tensors: Mapping[str, torch.Tensor], source: str, model: nn.Module) -> None:
    """Refuse, naming the first, a tensor loading would silently change or cannot judge: one
    that is not dense (sparse, meta), complex, or not floating point where `model` has a
    floating parameter or buffer (load_state_dict would cast it); then parameters holding NaN
    or Inf, which only give a model that outputs garbage. Of the buffers only BatchNorm
    statistics are judged for NaN/Inf: others may hold Inf on purpose (clamps)."""
    floating = {k for k, v in model.state_dict().items() if v.is_floating_point()}
    judged = {name for name, _ in model.named_parameters()}
    for key, value in tensors.items():
        if value.layout != torch.strided or value.is_meta:
            kind = "meta" if value.is_meta else str(value.layout).removeprefix("torch.")
            raise HT2Error(f"{source} holds '{key}' as a {kind} tensor; save dense tensors")
        if value.is_complex() or (key in floating and not value.is_floating_point()):
            raise HT2Error(
                f"{source} holds '{key}' as {str(value.dtype).removeprefix('torch.')}, where the "
                "model has floating-point numbers; it cannot be used"
            )
        statistic = key.endswith((".running_mean", ".running_var"))
        if not (key in judged or statistic) or not value.is_floating_point():
            continue
        if not bool(torch.isfinite(value).all()):
            raise HT2Error(f"{source} holds NaN or Inf values in '{key}'; it cannot be used")


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a weights file into model, strictly: every key and shape must match."""
    state = read_state_dict(path)
    refuse_unusable(state, f"weights file {path}", model)
    problems = state_dict_mismatches(model.state_dict(), state)
    if problems:
        arch = getattr(model, "ht2_arch", {}).get("name", type(model).__name__)
        raise HT2Error(
            f"weights file {path} does not fit {arch}: {'; '.join(problems)}; "
            "pass weights saved from this architecture (or the matching model name)"
        )
    model.load_state_dict(state, strict=True)


def state_dict_mismatches(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches, each as one short phrase."""
    # BatchNorm fills in a missing num_batches_tracked itself (files saved before PyTorch 0.4.1).
    missing = [k for k in expected if k not in found and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} expects {tuple(expected[k].shape)} but the file has {tuple(found[k].shape)}"
        for k in expected
        if k in found and expected[k].shape != found[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_first(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_first(shapes)}")
    return problems


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    if len(items) > _SHOWN_KEYS:
        shown += f", … ({len(items)} in all)"
    return shown
