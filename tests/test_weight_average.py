"""--ema: the weight average follows its formula, and it (not the live model) is what a run
evaluates and saves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import ht2
from ht2.io.artefacts import save_into
from ht2.train import TrainConfig, fit
from ht2.train.averaging import weight_average
from tests._shared import write_image_tree


def test_no_decay_keeps_no_average() -> None:
    assert weight_average(nn.Linear(2, 2), 0.0) is None


def test_the_average_is_exponential_over_steps_and_covers_buffers() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = weight_average(model, 0.9)
    for value in (1.0, 2.0, 4.0):  # three "optimiser steps"
        with torch.no_grad():
            model[0].weight.fill_(value)
            model[1].running_mean.fill_(-value)
        average.update_parameters(model)
    expected = (0.9 * 1.0 + 0.1 * 2.0) * 0.9 + 0.1 * 4.0  # the first step is copied as it is
    assert torch.allclose(average.module[0].weight, torch.full((2, 3), expected))
    assert torch.allclose(average.module[1].running_mean, torch.full((2,), -expected))


def test_a_run_evaluates_and_saves_the_average(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HT2_CACHE_DIR", str(tmp_path / "cache"))
    data = write_image_tree(tmp_path / "data", classes=("a", "b"), per_class=6)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=4),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    saved: list[nn.Module] = []

    def save_best(trained: nn.Module, folder: Path, _: dict) -> None:
        saved.append(trained)
        save_into(trained, folder, None)

    config = TrainConfig(epochs=2, lr=0.1, batch_size=4, workers=0, device="cpu", ema=0.5)
    entry = ht2.models.get_entry("cifar10_resnet20")
    fit(model, entry, str(data), config, tmp_path / "run", save_best, evaluate_first=False)
    assert saved and all(trained is not model for trained in saved)
    average = load_file(str(tmp_path / "run" / "checkpoint" / "average.safetensors"))
    kept = saved[-1].state_dict()
    assert all(torch.equal(average[f"module.{k}"], v.cpu()) for k, v in kept.items())
    live = model.state_dict()
    assert not all(torch.equal(live[k], v) for k, v in kept.items())
