"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from ht2.errors import HT2Error


def resolve_device(name: str | None = "auto") -> torch.device:
    """'auto' (or None) picks CUDA when PyTorch sees a GPU; 'cuda' without one is a user error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HT2Error(
            "device cuda: no CUDA GPU is available to torch here; use device cpu", params="device"
        )
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise HT2Error(f"unknown device {name!r}; use cpu, cuda or auto")
    return torch.device(name)
