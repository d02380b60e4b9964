"""What the training tests share: a simulated kill, run comparisons, a two-process torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ht2.train.runner as runner


class Killed(KeyboardInterrupt):
    """What the simulated kill raises (a KeyboardInterrupt, as SIGINT/SIGTERM would)."""


def kill_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int, after_batches: int = 0) -> None:
    """Make the run die in `epoch` (1-based) after `after_batches` optimiser steps of it."""
    real = runner.train_one_epoch
    calls = {"n": 0}

    def dying(model, batches: Iterable, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] < epoch:
            return real(model, batches, *args, **kwargs)

        def until_killed() -> Iterator:
            for done, batch in enumerate(batches):
                if done == after_batches:
                    raise Killed
                yield batch

        return real(model, until_killed(), *args, **kwargs)

    monkeypatch.setattr(runner, "train_one_epoch", dying)


def _checkpoint_state(out: Path) -> dict:
    """The run's checkpoint/state.json: meta, optimiser, scheduler and scaler state."""
    return json.loads((out / "checkpoint" / "state.json").read_text())


def checkpoint_meta(out: Path) -> dict:
    """The meta of the run's last checkpoint (epoch, steps, how it computed)."""
    return _checkpoint_state(out)["meta"]


def run_tensors(out: Path) -> dict[str, torch.Tensor]:
    """Every tensor a run leaves: last checkpoint (weights, optimiser) and the best model."""
    tensors = {}
    for name in ("checkpoint/model.safetensors", "checkpoint/optimizer.safetensors"):
        tensors.update({f"{name}:{k}": v for k, v in load_file(str(out / name)).items()})
    average = out / "checkpoint" / "average.safetensors"  # kept with --ema
    if average.is_file():
        tensors.update({f"average:{k}": v for k, v in load_file(str(average)).items()})
    tensors.update({f"best:{k}": v for k, v in load_file(str(out / "model.safetensors")).items()})
    return tensors


def run_log(out: Path) -> list[dict]:
    """The lines of the run's log.jsonl without their timings."""
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    timing = ("seconds", "images_per_second")
    return [{k: v for k, v in line.items() if k not in timing} for line in lines]


def assert_same_tensors(straight: Path, resumed: Path) -> None:
    a, b = run_tensors(straight), run_tensors(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ after resume: {different[:5]}"


def assert_same_run(straight: Path, resumed: Path) -> None:
    """Same tensors, log, checkpoint meta and optimiser, scheduler and scaler state."""
    assert_same_tensors(straight, resumed)
    assert run_log(straight) == run_log(resumed)
    state_a, state_b = _checkpoint_state(straight), _checkpoint_state(resumed)
    meta_a = {k: v for k, v in state_a["meta"].items() if k != "saved"}
    assert meta_a == {k: v for k, v in state_b["meta"].items() if k != "saved"}
    for key in ("optimizer", "scheduler", "scaler"):
        assert state_a[key] == state_b[key], key


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc_per_node=2 -m ht2 ARGS` on the CPU (one thread per
    process); fails the test, showing the end of stderr, unless it exits 0."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", "-m", "ht2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done
