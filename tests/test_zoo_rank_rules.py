"""Every method under every rank rule on a spread of registry models (random weights)."""

from __future__ import annotations

import pytest
import torch

from ht2 import compress, models
from ht2.surgery.targets import TOLERANCE, Target

# The small nets run by default; DenseNet-40 and GoogLeNet (minutes each) with -m slow.
SMALL = ["cifar10_resnet20", "squeezenet1_1", "mobilenet_v3_small"]
LARGE = ["cifar10_densenet40", "googlenet"]
ZOO = [*SMALL, *(pytest.param(name, marks=pytest.mark.slow) for name in LARGE)]
METHODS = ["ht2", "tucker2", "cp", "spatial-svd"]


def _model_and_input(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    entry = models.get_entry(name)
    size = (3, 64, 64) if entry.input_size[-1] > 64 else entry.input_size
    return models.create(name).eval(), torch.randn(1, *size)


def _replay_ranks(report) -> dict[str, dict[str, int]]:
    return {layer.name: layer.ranks for layer in report.replaced}


# By default three pairs, so that each small net and each method but CP (an ALS fit per rank)
# runs once; every other pair (CP, the large nets, and the rest: VBMF of MobileNet alone takes
# tens of seconds) with -m slow.
DEFAULT_PAIRS = {
    ("cifar10_resnet20", "ht2"),
    ("squeezenet1_1", "tucker2"),
    ("mobilenet_v3_small", "spatial-svd"),
}


def _rank_rule_cases() -> list:
    return [
        pytest.param(
            name,
            method,
            marks=[] if (name, method) in DEFAULT_PAIRS else [pytest.mark.slow],
            id=f"{name}-{method}",
        )
        for name in [*SMALL, *LARGE]
        for method in METHODS
    ]


@pytest.mark.parametrize(("name", "method"), _rank_rule_cases())
def test_energy_vbmf_and_given_ranks_run_on_the_zoo(name: str, method: str) -> None:
    model, x = _model_and_input(name)
    with torch.no_grad():
        expected_shape = model(x).shape
    energy = 0.5 if method == "cp" else 0.8
    first = compress(model, energy=energy, method=method, example_input=x)
    assert first.replaced and model(x).shape == expected_shape
    if method != "cp":  # VBMF needs unfoldings; CP has none
        fresh, _ = _model_and_input(name)
        vbmf = compress(fresh, method=method, rank_rule="vbmf", example_input=x)
        assert vbmf.rank_rule == "vbmf" and fresh(x).shape == expected_shape
    replay, _ = _model_and_input(name)
    again = compress(replay, method=method, example_input=x, layer_ranks=_replay_ranks(first))
    assert _replay_ranks(again) == _replay_ranks(first)


@pytest.mark.parametrize("method", ["ht2", "tucker2", "spatial-svd"])
@pytest.mark.parametrize("name", ZOO)
def test_parameter_target_on_the_zoo(name: str, method: str) -> None:
    model, x = _model_and_input(name)
    report = compress(model, method=method, example_input=x, target=Target("params", 2.0))
    assert abs(report.param_reduction / 2.0 - 1) <= TOLERANCE, report.target
