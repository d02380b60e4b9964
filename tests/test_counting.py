"""MAC counts: the analytic `layer_macs` against PyTorch's FLOP counter and report.json."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import ht2
from ht2.metrics import count_macs, count_params, layer_macs, macs_under, num_threads


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One CPU thread: on a shared machine two OpenMP threads can stall for whole seconds."""
    with num_threads(1):
        yield


class Mixed(nn.Module):
    """Conv with bias, grouped conv, transposed conv, Conv1d and a Linear with bias."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.temporal = nn.Conv1d(4, 6, 3)
        self.head = nn.Linear(6, 5, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(self.grouped(self.stem(x)).relu())
        x = self.temporal(x.flatten(2)).mean(-1)
        return self.head(x)


class BareMatmul(nn.Module):
    """A Linear and a plain matrix product that belongs to no Conv/Linear module."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.register_buffer("mix", torch.randn(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) @ self.mix


def _check_against_layer_macs(model: nn.Module, x: torch.Tensor) -> None:
    analytic = layer_macs(model, x)
    counted = count_macs(model, x)
    assert counted.total == sum(analytic.values())
    for name, macs in analytic.items():
        assert counted.per_module.get(name, 0) == macs, name


def test_flop_counter_agrees_with_layer_macs_on_every_layer_kind() -> None:
    model = Mixed().eval()
    x = torch.randn(1, 3, 16, 16)
    _check_against_layer_macs(model, x)
    counted = count_macs(model, x)
    # Biases are not counted by either: the Linear is exactly in x out.
    assert counted.per_module["head"] == 6 * 5
    assert counted.per_module["stem"] == 8 * 8 * 8 * 3 * 9
    assert counted.per_module[""] == counted.total
    assert set(counted.per_op) == {"aten.convolution", "aten.addmm"}


def test_flop_counter_counts_the_whole_batch() -> None:
    model = Mixed().eval()
    one = count_macs(model, torch.randn(1, 3, 16, 16)).total
    assert count_macs(model, torch.randn(3, 3, 16, 16)).total == 3 * one


def test_flop_counter_also_counts_products_outside_layers() -> None:
    model = BareMatmul().eval()
    x = torch.randn(1, 4)
    counted = count_macs(model, x)
    assert sum(layer_macs(model, x).values()) == 4 * 4
    assert counted.total == 4 * 4 + 4 * 3  # the bare `@` is extra


def _cross_check_compression(name: str, size: int, tmp_path: Path) -> None:
    model = ht2.models.create(name)
    original = copy.deepcopy(model)
    x = torch.zeros(1, 3, size, size)
    report = ht2.compress(model, energy=0.7, example_input=x)
    assert report.replaced
    ht2.save(model, tmp_path / name, report)
    stored = json.loads((tmp_path / name / "report.json").read_text())
    loaded = ht2.load(tmp_path / name)

    before, after = count_macs(original, x), count_macs(loaded, x)
    assert before.total == stored["macs_before"]
    assert after.total == stored["macs_after"]
    assert after.total < before.total
    for layer in stored["layers"]:
        assert before.per_module[layer["name"]] == layer["macs_before"], layer["name"]
        assert after.per_module[layer["name"]] == layer["macs_after"], layer["name"]
    analytic = layer_macs(loaded, x)
    for layer in stored["layers"]:
        assert macs_under(analytic, layer["name"]) == layer["macs_after"]
    assert count_params(loaded) == stored["params_after"]


def test_compressed_cifar_resnet20_macs_match_report_json(tmp_path: Path) -> None:
    _cross_check_compression("cifar10_resnet20", 32, tmp_path)


@pytest.mark.slow
def test_compressed_torchvision_resnet18_macs_match_report_json(tmp_path: Path) -> None:
    _cross_check_compression("resnet18", 224, tmp_path)
