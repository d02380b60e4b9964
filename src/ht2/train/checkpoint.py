"""Training checkpoints as safetensors + JSON (no pickle), written atomically every epoch."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ht2.errors import BAD_JSON, HT2Error
from ht2.io import atomic_directory

STATE = "state.json"
MODEL = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as flat tensors ("index.key") and the JSON rest."""
    tensors, plain = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *rest["plain"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def _jsonable_scheduler(state: dict[str, Any]) -> dict[str, Any]:
    """Scheduler state minus what the constructor rebuilds and JSON cannot hold (Counters)."""
    return {k: v for k, v in state.items() if not isinstance(v, Counter)}


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    meta: dict[str, Any],
) -> None:
    """Write DIR (model, optimiser, scheduler, scaler, `meta`) whole, replacing the old one."""
    opt_tensors, opt_rest = _split_optimizer(optimizer.state_dict())
    state = {
        "meta": meta,
        "optimizer": opt_rest,
        "scheduler": _jsonable_scheduler(scheduler.state_dict()),
        "scaler": scaler.state_dict(),
    }
    weights = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
    }
    with atomic_directory(directory, overwrite=True) as staging:
        save_file(weights, str(staging / MODEL))
        save_file(opt_tensors, str(staging / OPTIMIZER))
        (staging / STATE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")


def read_checkpoint_meta(directory: Path) -> dict[str, Any]:
    """The meta block of a checkpoint (epoch, model, ...), or a one-line error."""
    path = directory / STATE
    if not path.is_file():
        raise HT2Error(f"no checkpoint to resume from: {path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))["meta"]
    except (KeyError, TypeError, *BAD_JSON) as error:
        raise HT2Error(
            f"{path} is damaged ({error}); start again without resume", params="resume"
        ) from None


def load_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote into the live objects; return the meta."""
    state = json.loads((directory / STATE).read_text(encoding="utf-8"))
    weights = load_file(str(directory / MODEL))
    expected = model.state_dict()
    if set(weights) != set(expected) or any(
        weights[k].shape != v.shape for k, v in expected.items()
    ):
        raise HT2Error(
            f"checkpoint {directory} was saved from another model; it cannot resume this one"
        )
    model.load_state_dict(weights)
    device = next(model.parameters()).device
    opt_tensors = {k: v.to(device) for k, v in load_file(str(directory / OPTIMIZER)).items()}
    optimizer.load_state_dict(_join_optimizer(opt_tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    return state["meta"]
