"""The CIFAR-10 ResNet weights shipped in the package (trained by `ht2 train`)."""

from __future__ import annotations

import json

import pytest
import torch

from ht2 import models
from ht2.cli.main import main
from ht2.models.bundled import bundled_path
from tests._shared import cifar10_jpeg_dir

TOP1 = {  # measured on the JPEG test split right after training
    "cifar10_resnet20": 86.84,
    "cifar10_resnet56": 88.64,
}


@pytest.mark.parametrize("name", sorted(TOP1))
def test_bundled_weights_load_without_network(name: str) -> None:
    assert bundled_path(name).is_file()
    model = models.create(name, weights="pretrained")
    assert model.ht2_arch["weights"] == "pretrained"
    assert torch.isfinite(model(torch.zeros(2, 3, 32, 32))).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TOP1))
def test_bundled_weights_score_what_training_measured(capsys, name: str) -> None:
    data = cifar10_jpeg_dir()
    args = ["evaluate", name, "--pretrained", "--data", str(data), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(TOP1[name], abs=0.05)
