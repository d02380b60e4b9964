"""Generic surgery: the paper's policy on any module, globs, keep-if-larger, the report."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ht2 import HT2Error, compress
from ht2.layers import HT2Conv2d, SVDConv2d, SVDLinear
from ht2.metrics import count_params, layer_macs


class TinyNet(nn.Module):
    """A first conv, a 3x3, a 1x1, a depthwise conv, a Conv1d and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 1),
            nn.Conv2d(32, 32, 3, padding=1, groups=32),
        )
        self.temporal = nn.Conv1d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem(x))
        x = self.temporal(x.flatten(2)).mean(-1)
        return self.head(x)


class ReversedOrder(nn.Module):
    """Registers a conv before the stem, but runs the stem first."""

    def __init__(self) -> None:
        super().__init__()
        self.later = nn.Conv2d(8, 8, 3, padding=1)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.later(self.stem(x))


def _by_name(report):
    return {layer.name: layer for layer in report.layers}


def test_paper_policy_on_a_small_net() -> None:
    model = TinyNet()
    report = compress(
        model, energy=1.0, example_input=torch.zeros(1, 3, 8, 8), keep_if_larger=False
    )
    assert isinstance(model.stem, SVDConv2d)
    assert isinstance(model.body[0], HT2Conv2d)
    assert isinstance(model.body[2], SVDConv2d)
    assert isinstance(model.head, SVDLinear)
    layers = _by_name(report)
    assert layers["body.3"].method == "dense" and "depthwise" in layers["body.3"].reason
    assert layers["temporal"].method == "dense" and "Conv1d" in layers["temporal"].reason


def test_full_rank_compression_keeps_the_outputs() -> None:
    model = TinyNet().eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    compress(model, energy=1.0, example_input=x[:1], keep_if_larger=False)
    actual = model(x)
    assert torch.linalg.norm(actual - expected) / torch.linalg.norm(expected) < 1e-5


def test_first_conv_is_found_by_execution_order() -> None:
    model = ReversedOrder()
    compress(model, energy=0.9, example_input=torch.zeros(1, 3, 8, 8), keep_if_larger=False)
    assert isinstance(model.stem, SVDConv2d)
    assert isinstance(model.later, HT2Conv2d)


def test_include_and_exclude_globs_pick_layers_by_name() -> None:
    model = TinyNet()
    report = compress(
        model, energy=0.9, include=["body.*"], exclude=["body.2"], keep_if_larger=False
    )
    layers = _by_name(report)
    assert layers["body.0"].method == "ht2"
    assert layers["body.2"].reason == "matched by --exclude"
    assert layers["head"].reason == "not matched by --include"
    assert type(model.head) is nn.Linear


def test_keep_if_larger_leaves_layers_that_would_grow_dense() -> None:
    model = TinyNet()
    report = compress(model, energy=1.0, example_input=torch.zeros(1, 3, 8, 8))
    layers = _by_name(report)
    assert layers["body.2"].method == "dense"
    assert "not fewer than" in layers["body.2"].reason
    assert type(model.body[2]) is nn.Conv2d
    assert report.params_after <= report.params_before


def test_report_totals_match_the_model() -> None:
    model = TinyNet()
    x = torch.zeros(1, 3, 8, 8)
    before_params, before_macs = count_params(model), sum(layer_macs(model, x).values())
    report = compress(model, energy=0.6, example_input=x)
    assert report.params_before == before_params
    assert report.params_after == count_params(model)
    assert report.macs_before == before_macs
    assert report.macs_after == sum(layer_macs(model, x).values())
    layer_params = sum(layer.params_after for layer in report.layers)
    assert layer_params == report.params_after  # TinyNet has parameters in these layers only


def test_compressing_twice_does_not_descend_into_factorized_layers() -> None:
    model = TinyNet()
    compress(model, energy=0.9, exclude=["head"], keep_if_larger=False)
    second = compress(model, energy=0.9, keep_if_larger=False)
    assert [layer.name for layer in second.layers] == ["body.3", "temporal", "head"]
    assert isinstance(model.head, SVDLinear) and isinstance(model.body[0], HT2Conv2d)


@pytest.mark.parametrize("energy", [0, 1.2, -1])
def test_energy_outside_range_is_an_error(energy: float) -> None:
    with pytest.raises(HT2Error, match=r"energy must be in \(0, 1\]"):
        compress(TinyNet(), energy=energy)


def test_a_model_with_nothing_to_compress_is_an_error() -> None:
    with pytest.raises(HT2Error, match="no layer to compress"):
        compress(nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4)))
    with pytest.raises(HT2Error, match="no layer to compress"):
        compress(nn.Sequential(nn.ReLU()))


def test_unknown_method_is_an_error() -> None:
    with pytest.raises(HT2Error, match="unknown method"):
        compress(TinyNet(), method="magic")


def test_macs_follow_the_paper_convention() -> None:
    conv = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(8 * 256, 5)
    )
    macs = layer_macs(conv, torch.zeros(1, 3, 32, 32))
    assert macs == {"0": 16 * 16 * 8 * 3 * 9, "2": 8 * 256 * 5}
