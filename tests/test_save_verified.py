"""ht2.io.save_verified: a folder is written only when it loads back to the same model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ht2
from ht2.io import verified
from ht2.io.artefacts import REPORT

INPUT = (3, 32, 32)


@pytest.fixture
def compressed() -> tuple[torch.nn.Module, ht2.surgery.CompressionReport]:
    model = ht2.models.create("cifar10_resnet20", num_classes=10)
    report = ht2.compress(model, energy=0.7, example_input=torch.zeros(1, *INPUT))
    return model, report


def test_saved_folder_loads_back_to_the_same_outputs(compressed, tmp_path: Path) -> None:
    model, report = compressed
    path = ht2.io.save_verified(model, tmp_path / "out", INPUT, report)
    x = torch.randn(4, *INPUT)
    with torch.no_grad():
        assert torch.equal(ht2.load(path)(x), model.eval()(x))
    assert (path / REPORT).is_file()


def test_a_folder_that_loads_back_differently_is_not_written(
    compressed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = compressed
    real_load = verified.load

    def drifted(directory: Path) -> torch.nn.Module:
        loaded = real_load(directory)
        with torch.no_grad():
            loaded.linear.bias.add_(1e-3)
        return loaded

    monkeypatch.setattr(verified, "load", drifted)
    with pytest.raises(ht2.HT2Error, match="does not load back to this model; nothing written"):
        ht2.io.save_verified(model, tmp_path / "out", INPUT)
    assert not (tmp_path / "out").exists()


def test_an_existing_folder_needs_overwrite(compressed, tmp_path: Path) -> None:
    model, report = compressed
    ht2.io.save_verified(model, tmp_path / "out", INPUT, report)
    with pytest.raises(ht2.HT2Error, match="exists and is not empty"):
        ht2.io.save_verified(model, tmp_path / "out", INPUT, report)
    assert ht2.io.save_verified(model, tmp_path / "out", INPUT, overwrite=True) == tmp_path / "out"
    assert not (tmp_path / "out" / REPORT).exists()
