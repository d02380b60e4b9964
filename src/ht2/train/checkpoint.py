"""Training checkpoints as safetensors + JSON (no pickle), written atomically every epoch."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ht2.errors import BAD_JSON, HT2Error
from ht2.io import atomic_directory
from ht2.models.weights import refuse_unusable

STATE = "state.json"
MODEL = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
AVERAGE = "average.safetensors"  # the weight average (--ema), when one is kept


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
    average: nn.Module | None = None,
) -> None:
    """Write DIR (model, optimiser, scheduler, scaler, `meta`, and the weight `average` when one
    is kept) whole, replacing the old one."""
    opt_tensors, opt_rest = _split_optimizer(optimizer.state_dict())
    state = {
        "meta": meta,
        "optimizer": opt_rest,
        "scheduler": _jsonable_scheduler(scheduler.state_dict()),
        "scaler": scaler.state_dict(),
    }
    with atomic_directory(directory, overwrite=True) as staging:
        save_file(_cpu_weights(model), str(staging / MODEL))
        if average is not None:
            save_file(_cpu_weights(average), str(staging / AVERAGE))
        save_file(opt_tensors, str(staging / OPTIMIZER))
        (staging / STATE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")


def _cpu_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def read_checkpoint_meta(directory: Path) -> dict[str, Any]:
    """The meta block of a checkpoint (epoch, model, ...), every field checked, or a one-line
    error."""
    return _read_state(directory)["meta"]


def _read_state(directory: Path) -> dict[str, Any]:
    """The checkpoint's state.json, its meta block checked, or a one-line error."""
    path = directory / STATE
    if not path.is_file():
        raise HT2Error(f"no checkpoint to resume from: {path} is missing")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        problem = _meta_problem(state["meta"])
    except (KeyError, TypeError, *BAD_JSON) as error:
        problem = str(error)
    if problem:
        raise damaged(path, problem)
    return state


def damaged(path: Path, why: str) -> HT2Error:
    """The one-line error for a run file that cannot be resumed from."""
    return HT2Error(f"{path} is damaged ({why}); start again without resume", params="resume")


def _meta_problem(meta: Any) -> str | None:
    """What is wrong with a checkpoint's meta block, as save_checkpoint's caller writes it."""
    if not isinstance(meta, dict):
        return f"meta is a {type(meta).__name__}, not an object"
    for key in ("epoch", "best_epoch", "steps"):
        value = meta.get(key, 0 if key == "steps" else None)  # steps: not in older checkpoints
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"meta.{key} is {value!r}, not a whole number from 0"
    best = meta.get("best_top1")
    if not isinstance(best, (int, float)) or isinstance(best, bool):
        return f"meta.best_top1 is {best!r}, not a number"
    for key in ("config", "computed"):
        if not isinstance(meta.get(key, {}), dict):
            return f"meta.{key} is {meta[key]!r}, not an object"
    computed = meta.get("computed")
    flags = {"amp": str, "channels_last": bool, "in_memory": bool}
    if computed is not None and any(not isinstance(computed.get(k), t) for k, t in flags.items()):
        return f"meta.computed is {computed!r}, not amp, channels_last and in_memory"
    return None


def load_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    average: nn.Module | None = None,
) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote into the live objects (the weight `average`
    too, when one is kept); return the meta. A checkpoint that does not restore whole (a
    truncated file, an edited state) is refused in one line: the run cannot go on from it."""
    state = _read_state(directory)
    try:
        _restore(directory, state, model, optimizer, scheduler, scaler)
        if average is not None:
            _restore_weights(directory / AVERAGE, average)
    except HT2Error:
        raise
    except (OSError, SafetensorError, KeyError, TypeError, AttributeError, *BAD_JSON) as error:
        why = str(error).splitlines()[0] if str(error) else ""
        raise damaged(directory, f"{type(error).__name__}: {why}") from None
    except torch.OutOfMemoryError:
        raise  # the device's state, not the checkpoint's
    except RuntimeError as error:  # a state dict that does not fit the live object
        raise damaged(directory, str(error).splitlines()[0]) from None
    return state["meta"]


def _restore_weights(path: Path, model: nn.Module) -> None:
    """`model`'s weights from `path`, refused when they belong to another model or are
    damaged."""
    if not path.is_file():
        raise damaged(path.parent, f"{path.name} is missing")
    weights = load_file(str(path))
    expected = model.state_dict()
    if set(weights) != set(expected) or any(
        weights[k].shape != v.shape for k, v in expected.items()
    ):
        raise HT2Error(
            f"checkpoint {path.parent} was saved from another model; it cannot resume this one"
        )
    changed = [k for k, v in expected.items() if weights[k].dtype != v.dtype]
    if changed:
        raise damaged(path, f"{changed[0]} is {weights[changed[0]].dtype}")
    try:
        refuse_unusable(weights, str(path), model)
    except HT2Error as error:
        raise HT2Error(f"{error}; start again without resume", params="resume") from None
    model.load_state_dict(weights)


def _restore(
    directory: Path,
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
) -> None:
    _restore_weights(directory / MODEL, model)
    device = next(model.parameters()).device
    opt_tensors = {k: v.to(device) for k, v in load_file(str(directory / OPTIMIZER)).items()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for flat, tensor in opt_tensors.items():
        index = int(flat.split(".", 1)[0])
        if not 0 <= index < len(params) or (tensor.dim() and tensor.shape != params[index].shape):
            raise damaged(directory / OPTIMIZER, f"{flat} has shape {tuple(tensor.shape)}")
    optimizer.load_state_dict(_join_optimizer(opt_tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
