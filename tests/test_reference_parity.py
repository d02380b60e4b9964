"""Rank parity with the reference implementation on the real CIFAR-10 ResNet weights."""

from __future__ import annotations

import json

import pytest
import torch

from ht2 import compress, models
from tests._shared import REFERENCE_RANKS, RESNET_WEIGHTS, shared_file

# Every energy on ResNet-20; ResNet-56 (several times slower) at 0.9 by default, the rest slow.
CASES = [
    (net, e)
    if net == "cifar10_resnet20" or e == 0.9
    else pytest.param(net, e, marks=pytest.mark.slow)
    for net in RESNET_WEIGHTS
    for e in (0.9, 0.8, 0.7, 0.6, 0.5)
]


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(shared_file(REFERENCE_RANKS).read_text())


@pytest.mark.parametrize(("net", "energy"), CASES)
def test_ranks_and_totals_equal_the_reference(reference: dict, net: str, energy: float) -> None:
    expected = reference[f"{net}@{energy}"]
    model = models.create(net, weights=shared_file(RESNET_WEIGHTS[net]))
    report = compress(
        model, energy=energy, example_input=torch.zeros(1, 3, 32, 32), keep_if_larger=False
    )
    got = {layer.name: {"method": layer.method, **layer.ranks} for layer in report.replaced}
    assert got == expected["layers"]
    assert report.params_before == expected["params_before"]
    assert report.params_after == expected["params_after"]
    assert report.macs_before == expected["macs_before"]
    assert report.macs_after == expected["macs_after"]
