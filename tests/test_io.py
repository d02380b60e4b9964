"""Artefacts: save/load round trips bit for bit, no pickle, clear errors on bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import ht2
from ht2 import HT2Error, models
from ht2.io.artefacts import MANIFEST, TENSORS

# ResNet-20 by default; the others take minutes: -m slow (test_zoo_round_trip has them all).
ROUND_TRIP = [
    "cifar10_resnet20",
    *(
        pytest.param(name, marks=pytest.mark.slow)
        for name in ("cifar10_densenet40", "resnet18", "googlenet")
    ),
]


def _compressed(name: str, energy: float = 0.7) -> tuple[nn.Module, ht2.CompressionReport]:
    model = models.create(name)
    size = models.get_entry(name).input_size
    report = ht2.compress(model, energy=energy, example_input=torch.zeros(1, *size))
    return model, report


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_save_load_round_trip_is_bit_exact(name: str, tmp_path: Path) -> None:
    model, report = _compressed(name)
    ht2.save(model, tmp_path / "out", report)
    loaded = ht2.load(tmp_path / "out")
    x = torch.randn(2, *models.get_entry(name).input_size)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert type(loaded.get_submodule(report.replaced[0].name)) is type(
        model.get_submodule(report.replaced[0].name)
    )


def test_folder_holds_safetensors_plan_and_report(tmp_path: Path) -> None:
    model, report = _compressed("cifar10_resnet20")
    ht2.save(model, tmp_path / "out", report)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ht2.json",
        "model.safetensors",
        "report.json",
    ]
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["arch"] == {"name": "cifar10_resnet20", "kwargs": {}, "weights": None}
    assert manifest["energy"] == 0.7 and manifest["format_version"] == 1
    assert [e["name"] for e in manifest["plan"]] == [r.name for r in report.replaced]
    first = manifest["plan"][0]
    assert first["method"] == "svd" and first["layer"]["type"] == "Conv2d"
    assert (tmp_path / "out" / TENSORS).read_bytes()[:8] != b"\x80\x02\x8a\x0a"  # not a pickle


class OwnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(self.a(x)).mean((2, 3)))


def test_own_architecture_needs_and_takes_an_instance(tmp_path: Path) -> None:
    model = OwnNet()
    ht2.compress(model, energy=0.8, keep_if_larger=False)
    ht2.save(model, tmp_path / "own")
    with pytest.raises(HT2Error, match=r"model=MyNet\(\)"):
        ht2.load(tmp_path / "own")
    loaded = ht2.load(tmp_path / "own", model=OwnNet())
    x = torch.randn(1, 3, 6, 6)
    assert torch.equal(loaded(x), model.eval()(x))


def test_plan_that_does_not_fit_the_instance_is_an_error(tmp_path: Path) -> None:
    model = OwnNet()
    ht2.compress(model, energy=0.8, keep_if_larger=False)
    ht2.save(model, tmp_path / "own")
    other = OwnNet()
    other.b = nn.Conv2d(8, 8, 5, padding=2)
    with pytest.raises(HT2Error, match="does not fit the model at 'b'"):
        ht2.load(tmp_path / "own", model=other)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model = OwnNet()
    ht2.compress(model, energy=0.8, keep_if_larger=False)
    return ht2.save(model, tmp_path / "saved")


def test_missing_manifest_names_the_file(saved: Path) -> None:
    (saved / MANIFEST).unlink()
    with pytest.raises(HT2Error, match=r"ht2\.json is missing"):
        ht2.load(saved, model=OwnNet())


def test_truncated_manifest_names_the_file(saved: Path) -> None:
    text = (saved / MANIFEST).read_text()
    (saved / MANIFEST).write_text(text[: len(text) // 2])
    with pytest.raises(HT2Error, match=r"ht2\.json is not valid JSON"):
        ht2.load(saved, model=OwnNet())


def test_truncated_tensors_name_the_file(saved: Path) -> None:
    data = (saved / TENSORS).read_bytes()
    (saved / TENSORS).write_bytes(data[: len(data) // 2])
    with pytest.raises(HT2Error, match=r"model\.safetensors cannot be read"):
        ht2.load(saved, model=OwnNet())


def test_missing_tensors_name_the_file(saved: Path) -> None:
    (saved / TENSORS).unlink()
    with pytest.raises(HT2Error, match=r"model\.safetensors is missing"):
        ht2.load(saved, model=OwnNet())


def test_mismatched_tensors_list_the_keys(saved: Path, tmp_path: Path) -> None:
    other = OwnNet()
    other.head = nn.Linear(8, 5)
    ht2.compress(other, energy=0.8, keep_if_larger=False)
    ht2.save(other, tmp_path / "other")
    (saved / TENSORS).write_bytes((tmp_path / "other" / TENSORS).read_bytes())
    with pytest.raises(HT2Error, match=r"does not fit the model: (missing|unexpected|shape)"):
        ht2.load(saved, model=OwnNet())


def test_newer_format_version_asks_for_an_upgrade(saved: Path) -> None:
    manifest = json.loads((saved / MANIFEST).read_text())
    manifest["format_version"] = 99
    (saved / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(HT2Error, match="upgrade ht2"):
        ht2.load(saved, model=OwnNet())


def test_save_refuses_a_non_empty_folder_unless_overwrite(saved: Path) -> None:
    model = OwnNet()
    with pytest.raises(HT2Error, match="not empty"):
        ht2.save(model, saved)
    ht2.save(model, saved, overwrite=True)
    assert json.loads((saved / MANIFEST).read_text())["plan"] == []
    assert [p.name for p in saved.parent.iterdir() if p.name.startswith(".")] == []


def test_a_failed_save_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ht2.io.artefacts.write_json", explode)
    with pytest.raises(KeyboardInterrupt):
        ht2.save(OwnNet(), tmp_path / "never")
    assert list(tmp_path.iterdir()) == []
