"""The CIFAR-10 ResNet-20 weights shipped in the package (trained by `ht2 train`)."""

from __future__ import annotations

import json

import pytest
import torch

from ht2 import models
from ht2.cli.main import main
from ht2.models.bundled import bundled_path
from tests._shared import cifar10_jpeg_dir

TOP1 = 86.84  # measured on the JPEG test split right after training


def test_bundled_weights_load_without_network() -> None:
    assert bundled_path("cifar10_resnet20").is_file()
    model = models.create("cifar10_resnet20", weights="pretrained")
    assert model.ht2_arch["weights"] == "pretrained"
    assert torch.isfinite(model(torch.zeros(2, 3, 32, 32))).all()


@pytest.mark.slow
def test_bundled_weights_score_what_training_measured(capsys) -> None:
    data = cifar10_jpeg_dir()
    args = ["evaluate", "cifar10_resnet20", "--pretrained", "--data", str(data), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(TOP1, abs=0.05)
