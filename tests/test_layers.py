"""Factorized modules: exact at full rank over the conv hyper-parameter grid, rebuildable."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from ht2.decomp import HT2Ranks
from ht2.layers import (
    ConvSpec,
    HT2Conv2d,
    LinearSpec,
    SVDConv2d,
    SVDLinear,
    build_factorized,
    factorize,
)
from tests._shared import CONV_GEOMETRIES, PADDING_MODES, grid_conv, rel_error

GRID = list(itertools.product(CONV_GEOMETRIES, PADDING_MODES, [True, False]))


@pytest.mark.parametrize("method", ["ht2", "svd"])
@pytest.mark.parametrize(("geometry", "mode", "bias"), GRID)
def test_full_rank_factorized_conv_equals_dense(method, geometry, mode, bias) -> None:
    conv = grid_conv(geometry, mode, bias)
    if bias:
        nn.init.normal_(conv.bias)
    x = torch.randn(2, 6, 13, 14)
    layer = factorize(conv, method, energy=1.0)
    expected = conv(x)
    actual = layer(x)
    assert actual.shape == expected.shape
    assert rel_error(actual, expected) < 1e-5


@pytest.mark.parametrize("bias", [True, False])
def test_full_rank_svd_linear_equals_dense(bias: bool) -> None:
    linear = nn.Linear(20, 9, bias=bias)
    x = torch.randn(4, 3, 20)
    layer = SVDLinear.from_dense(linear, energy=1.0)
    assert layer.ranks == {"r": 9}
    assert rel_error(layer(x), linear(x)) < 1e-5


def test_ht2_module_has_the_four_convolutions_of_the_paper() -> None:
    conv = nn.Conv2d(8, 10, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    layer = HT2Conv2d.from_dense(conv, ranks=HT2Ranks(r1=3, r13=4, r3=5))
    assert layer.reduce.weight.shape == (3, 8, 1, 1)
    assert layer.vertical.weight.shape == (4, 3, 3, 1)
    assert layer.vertical.stride == (2, 1) and layer.vertical.dilation == (1, 1)
    assert layer.horizontal.weight.shape == (5, 4, 1, 5)
    assert layer.horizontal.padding == (0, 2) and layer.horizontal.dilation == (1, 2)
    assert layer.expand.weight.shape == (10, 5, 1, 1) and layer.expand.bias is not None
    assert sum(p.numel() for p in layer.parameters()) == 8 * 3 + 3 * 3 * 4 + 5 * 4 * 5 + 5 * 10 + 10


@pytest.mark.parametrize("method", ["ht2", "svd"])
def test_to_dense_rebuilds_the_layer_the_chain_computes(method: str) -> None:
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, padding_mode="reflect")
    layer = factorize(conv, method, energy=0.7)
    dense = layer.to_dense()
    assert isinstance(dense, nn.Conv2d) and ConvSpec.of(dense) == ConvSpec.of(conv)
    x = torch.randn(1, 6, 9, 9)
    assert rel_error(dense(x), layer(x)) < 1e-5


def test_linear_to_dense_round_trip() -> None:
    layer = SVDLinear.from_dense(nn.Linear(12, 5), energy=0.6)
    x = torch.randn(3, 12)
    assert rel_error(layer.to_dense()(x), layer(x)) < 1e-5


@pytest.mark.parametrize(
    "layer",
    [
        HT2Conv2d.from_dense(
            nn.Conv2d(4, 6, 3, padding="same", padding_mode="circular"), energy=0.8
        ),
        SVDConv2d.from_dense(nn.Conv2d(4, 6, (1, 3), stride=2, bias=False), energy=0.8),
        SVDLinear.from_dense(nn.Linear(7, 5), energy=0.8),
    ],
)
def test_plan_entry_rebuilds_the_same_structure(layer) -> None:
    rebuilt = build_factorized(layer.plan_entry())
    assert type(rebuilt) is type(layer) and rebuilt.ranks == layer.ranks
    assert rebuilt.spec == layer.spec
    shapes = {k: v.shape for k, v in layer.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


def test_spec_round_trips_through_its_dict() -> None:
    spec = ConvSpec.of(
        nn.Conv2d(3, 5, (2, 3), stride=(1, 2), padding=(1, 0), dilation=2, padding_mode="replicate")
    )
    assert ConvSpec.from_dict(spec.to_dict()) == spec
    same = ConvSpec.of(nn.Conv2d(3, 5, 3, padding="same"))
    assert ConvSpec.from_dict(same.to_dict()) == same
    linear = LinearSpec.of(nn.Linear(3, 4, bias=False))
    assert LinearSpec.from_dict(linear.to_dict()) == linear


def test_grouped_conv_is_refused_by_the_factorized_modules() -> None:
    with pytest.raises(ValueError, match="groups=2"):
        HT2Conv2d.from_dense(nn.Conv2d(4, 4, 3, groups=2), energy=0.9)
    with pytest.raises(ValueError, match="does not apply"):
        factorize(nn.Linear(3, 3), "ht2", energy=0.9)
