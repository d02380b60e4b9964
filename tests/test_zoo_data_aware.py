"""Data-aware fitting and the spectrum and sensitivity allocators on a spread of registry
models (random weights, small inputs): they run, keep the output shape, meet the budget, and
the fit never leaves a layer further from the original than its plain factors."""

from __future__ import annotations

import pytest
import torch

from ht2 import models
from ht2.dataaware import DataAwareOptions, compress_data_aware
from ht2.planning.allocated import compress_allocated
from ht2.surgery.sensitivity import SensitivityOptions
from ht2.surgery.targets import TOLERANCE, Target

# Zoo-wide fits take tens of seconds to minutes each: all of them run with -m slow.
pytestmark = pytest.mark.slow
ZOO = ["squeezenet1_1", "cifar10_densenet40", "mobilenet_v3_small", "googlenet", "resnet18"]


def _model_and_images(name: str, count: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """Random weights and small random images (8 px for CIFAR nets, 32 px for ImageNet ones)."""
    torch.manual_seed(0)
    side = 32 if models.get_entry(name).input_size[-1] > 64 else 8
    return models.create(name).eval(), torch.randn(count, 3, side, side)


@pytest.mark.parametrize("name", ZOO)
def test_data_aware_fit_runs_on_the_zoo_and_only_lowers_layer_errors(name: str) -> None:
    model, images = _model_and_images(name, 8)
    with torch.no_grad():
        shape = model(images[:2]).shape
    report = compress_data_aware(
        model,
        [images],
        energy=0.7,
        calib_images=8,
        options=DataAwareOptions(mode="both", iterations=3, held_out=2),
        example_input=images[:1],
    )
    assert report.replaced and model(images[:2]).shape == shape
    fitted = [layer for layer in report.replaced if layer.calib_errors]
    assert len(fitted) == len(report.replaced)
    for layer in fitted:
        errors = layer.calib_errors
        final = list(errors.values())[-1]
        assert final <= min(errors["plain"], errors["whiten"]) + 1e-6, layer.name
    assert "gap" in report.data_aware


@pytest.mark.parametrize("allocation", ["spectrum", "sensitivity"])
@pytest.mark.parametrize("name", ZOO)
def test_allocators_meet_the_budget_on_the_zoo(name: str, allocation: str) -> None:
    model, images = _model_and_images(name, 8)
    with torch.no_grad():
        shape = model(images[:2]).shape
    report = compress_allocated(
        model,
        "ht2",
        Target("params", 2.0),
        allocation,
        images[:1],
        [images],
        images=8,
        options=SensitivityOptions(candidates=(0.5, 0.8)),
    )
    assert abs(report.param_reduction / 2.0 - 1) <= TOLERANCE, report.target
    assert report.target["allocation"] == allocation
    assert model(images[:2]).shape == shape
