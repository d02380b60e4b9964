"""The k x k method "spatial-svd" and its former name "svd": same factors, one warning, and
folders written before the rename load exactly."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import ht2
from ht2 import models
from ht2.choices import RenamedWarning
from ht2.cli.main import main
from ht2.dataaware import DataAwareOptions, compress_data_aware
from ht2.errors import HT2Error
from ht2.planning.allocated import compress_allocated
from ht2.surgery import resolve_method
from ht2.surgery.targets import Target

EXAMPLE = torch.zeros(1, 3, 32, 32)
RENAMED = "method 'svd' for k x k convolutions is now called 'spatial-svd'"


def _renamed(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(item.message) for item in caught if issubclass(item.category, RenamedWarning)]


def _resnet20() -> nn.Module:
    torch.manual_seed(0)
    return models.create("cifar10_resnet20").eval()


def test_resolve_method_keeps_current_names_and_refuses_unknown_ones() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_method("spatial-svd") == "spatial-svd"
        assert resolve_method("ht2") == "ht2"
    with pytest.raises(HT2Error, match="unknown method 'spatial_svd'; choose one of ht2, "):
        resolve_method("spatial_svd")


def test_svd_warns_once_and_gives_the_factors_and_ranks_of_spatial_svd() -> None:
    old, new = _resnet20(), _resnet20()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old_report = ht2.compress(old, energy=0.6, method="svd", example_input=EXAMPLE)
    assert len(_renamed(caught)) == 1 and _renamed(caught)[0].startswith(RENAMED)
    assert caught[0].filename == __file__  # names the caller's line, not ht2's
    new_report = ht2.compress(new, energy=0.6, method="spatial-svd", example_input=EXAMPLE)
    assert old_report.method == new_report.method == "spatial-svd"
    assert [(layer.method, layer.ranks) for layer in old_report.layers] == [
        (layer.method, layer.ranks) for layer in new_report.layers
    ]
    assert "spatial_svd" in {layer.method for layer in new_report.layers}
    old_state, new_state = old.state_dict(), new.state_dict()
    assert old_state.keys() == new_state.keys()
    assert all(torch.equal(old_state[key], new_state[key]) for key in old_state)


def test_svd_warns_once_through_allocation_and_data_aware_fitting() -> None:
    images = [torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        allocated = compress_allocated(
            _resnet20(), "svd", Target("params", 2.0), "spectrum", EXAMPLE
        )
    assert len(_renamed(caught)) == 1 and allocated.method == "spatial-svd"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = compress_data_aware(
            _resnet20(),
            images,
            energy=0.6,
            method="svd",
            calib_images=16,
            options=DataAwareOptions(iterations=3),  # the warning is the point, not the fit
            example_input=EXAMPLE,
        )
    assert len(_renamed(caught)) == 1 and fitted.method == "spatial-svd"


def test_cli_method_svd_still_works_with_one_warning_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    args = ["compress", "cifar10_resnet20", "--random-init", "--energy", "0.6", "--json"]
    assert main([*args, "--method", "svd", "--out", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if "warning" in line]
    assert len(warned) == 1 and warned[0].startswith(f"ht2: warning: {RENAMED}")
    assert json.loads((out / "report.json").read_text())["method"] == "spatial-svd"
    assert json.loads((out / "ht2.json").read_text())["method"] == "spatial-svd"
    assert main([*args, "--method", "spatial-svd", "--out", str(tmp_path / "n")]) == 0
    assert "warning" not in capsys.readouterr().err


def _conv(cin: int, cout: int, kernel: int, padding: int, bias: bool) -> dict:
    return {
        "type": "Conv2d",
        "in_channels": cin,
        "out_channels": cout,
        "kernel_size": [kernel, kernel],
        "stride": [1, 1],
        "padding": [padding, padding],
        "dilation": [1, 1],
        "groups": 1,
        "bias": bias,
        "padding_mode": "zeros",
    }


def _old_folder(directory: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A folder as ht2 0.1.0 wrote it for `--method svd` (and a CP layer): format 1, the
    run's method "svd", layer kinds "svd" (Tucker-1, Linear), "spatial_svd" and "cp"."""
    linear = {"type": "Linear", "in_features": 6, "out_features": 7, "bias": True}
    plan = [
        {"name": "0", "method": "svd", "ranks": {"r": 2}, "layer": _conv(3, 4, 3, 1, True)},
        {"name": "1", "method": "spatial_svd", "ranks": {"r": 3}, "layer": _conv(4, 5, 3, 1, True)},
        {"name": "2", "method": "cp", "ranks": {"r": 2}, "layer": _conv(5, 6, 3, 1, False)},
        {"name": "5", "method": "svd", "ranks": {"r": 2}, "layer": linear},
    ]
    for entry in plan:
        entry["energy"] = 0.9
    manifest = {
        "format": "ht2",
        "format_version": 1,
        "ht2_version": "0.1.0",
        "arch": None,
        "model_class": "Sequential",
        "energy": 0.9,
        "method": "svd",
        "plan": plan,
    }
    directory.mkdir()
    (directory / "ht2.json").write_text(json.dumps(manifest, indent=1))
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "ht2"})


def _dense_model() -> nn.Module:
    convs = [nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1)]
    convs.append(nn.Conv2d(5, 6, 3, padding=1, bias=False))
    return nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 7))


def test_a_folder_written_before_the_rename_loads_exactly(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    t = {
        "0.reduce.weight": r(2, 3, 3, 3),
        "0.expand.weight": r(4, 2, 1, 1),
        "0.expand.bias": r(4),
        "1.vertical.weight": r(3, 4, 3, 1),
        "1.expand.weight": r(5, 3, 1, 3),
        "1.expand.bias": r(5),
        "2.reduce.weight": r(2, 5, 1, 1),
        "2.vertical.weight": r(2, 1, 3, 1),
        "2.horizontal.weight": r(2, 1, 1, 3),
        "2.expand.weight": r(6, 2, 1, 1),
        "5.reduce.weight": r(2, 6),
        "5.expand.weight": r(7, 2),
        "5.expand.bias": r(7),
    }
    _old_folder(tmp_path / "old", t)
    loaded = ht2.load(tmp_path / "old", model=_dense_model())
    x = r(2, 3, 6, 6)
    y = F.conv2d(F.conv2d(x, t["0.reduce.weight"], padding=1), t["0.expand.weight"])
    y = F.conv2d(y + t["0.expand.bias"][:, None, None], t["1.vertical.weight"], padding=(1, 0))
    y = F.conv2d(y, t["1.expand.weight"], t["1.expand.bias"], padding=(0, 1))
    y = F.conv2d(y, t["2.reduce.weight"])
    y = F.conv2d(y, t["2.vertical.weight"], padding=(1, 0), groups=2)
    y = F.conv2d(y, t["2.horizontal.weight"], padding=(0, 1), groups=2)
    y = F.conv2d(y, t["2.expand.weight"]).mean((2, 3))
    y = F.linear(F.linear(y, t["5.reduce.weight"]), t["5.expand.weight"], t["5.expand.bias"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y, rtol=1e-5, atol=1e-5)
    kinds = [type(loaded.get_submodule(name)).__name__ for name in ("0", "1", "2", "5")]
    assert kinds == ["SVDConv2d", "SpatialSVDConv2d", "CPConv2d", "SVDLinear"]
    saved = ht2.save(loaded, tmp_path / "again")
    assert [e["method"] for e in json.loads((saved / "ht2.json").read_text())["plan"]] == [
        "svd",
        "spatial_svd",
        "cp",
        "svd",
    ]
