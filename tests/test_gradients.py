"""Training through factorized layers: one backward pass reaches every factor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ht2.layers import FactorizedLayer, HT2Conv2d, factorize
from ht2.layers.ht2_conv import HT2_FORMS


def _every_layer_type() -> nn.Sequential:
    """One factorized layer of each type (with biases), chained: 6x8x8 images to 5 scores."""
    return nn.Sequential(
        factorize(nn.Conv2d(6, 8, 3, padding=1), "ht2", energy=0.9),
        nn.Tanh(),
        factorize(nn.Conv2d(8, 8, 3, padding=1), "tucker2", energy=0.9),
        nn.Tanh(),
        factorize(nn.Conv2d(8, 8, 3, padding=1), "cp", ranks={"r": 4}),
        nn.Tanh(),
        factorize(nn.Conv2d(8, 8, (3, 5), padding=(1, 2)), "spatial_svd", energy=0.9),
        nn.Tanh(),
        factorize(nn.Conv2d(8, 6, 1), "svd", energy=0.9),
        nn.Flatten(),
        factorize(nn.Linear(6 * 8 * 8, 5), "svd", energy=0.9),
    )


def _factor_gradients(model: nn.Module) -> dict[str, torch.Tensor | None]:
    """After one backward pass: the gradient of every parameter of every factorized layer."""
    images = torch.randn(4, 6, 8, 8)
    model.train()
    nn.functional.cross_entropy(model(images), torch.tensor([0, 1, 2, 3])).backward()
    return {
        f"{name}.{param_name}": param.grad
        for name, layer in model.named_modules()
        if isinstance(layer, FactorizedLayer)
        for param_name, param in layer.named_parameters()
    }


def _assert_all_reached(gradients: dict[str, torch.Tensor | None]) -> None:
    for name, grad in gradients.items():
        assert grad is not None, f"{name} got no gradient"
        assert torch.isfinite(grad).all(), f"{name} has a non-finite gradient"
        assert grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_backward_reaches_every_factor_of_every_layer_type() -> None:
    model = _every_layer_type()
    kinds = {type(layer).__name__ for layer in model if isinstance(layer, FactorizedLayer)}
    assert kinds == {
        "HT2Conv2d",
        "Tucker2Conv2d",
        "CPConv2d",
        "SpatialSVDConv2d",
        "SVDConv2d",
        "SVDLinear",
    }
    gradients = _factor_gradients(model)
    assert len(gradients) == 23  # 4 HT-2, 3 Tucker-2, 4 CP factors, 2 per SVD kind; 6 biases
    _assert_all_reached(gradients)


@pytest.mark.parametrize("form", [form for form in HT2_FORMS if form != "four"])
def test_backward_reaches_every_factor_of_each_ht2_form(form: str) -> None:
    layer = factorize(nn.Conv2d(6, 8, 3, padding=1), "ht2", energy=0.9)
    assert isinstance(layer, HT2Conv2d)
    merged = layer.in_form(form)
    model = nn.Sequential(merged, nn.Flatten(), nn.Linear(8 * 8 * 8, 5))
    gradients = _factor_gradients(model)
    assert set(gradients) == {f"0.{child}.weight" for child in HT2_FORMS[form]} | {"0.expand.bias"}
    _assert_all_reached(gradients)
