"""Inference export: BatchNorm folding (exact, refused when unsafe), safetensors and ONNX output."""

from __future__ import annotations

import copy
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ht2
from ht2.cli.main import main
from ht2.export import OrtRunner, check_onnx, export_onnx, fold_batchnorms, fold_into_conv
from ht2.io.artefacts import MANIFEST
from ht2.layers import FactorizedLayer
from ht2.metrics import num_threads

RELATIVE = 1e-5  # folded and unfolded outputs agree within this share of the largest output


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with num_threads(1):
        yield


def _randomize_batchnorms(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters far from the identity, so folding shows."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
                if module.affine:
                    module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                    module.bias.copy_(torch.randn(n, generator=generator))


def _max_relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _compressed(name: str, energy: float, weights: str | None = None) -> nn.Module:
    model = ht2.models.create(name, weights=weights)
    if weights is None:
        _randomize_batchnorms(model)
    size = ht2.models.get_entry(name).input_size
    ht2.compress(model, energy=energy, example_input=torch.zeros(1, *size))
    return model


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    """The bundled pretrained CIFAR-10 ResNet-20 (real BatchNorm statistics) at e=0.9."""
    with num_threads(1):
        return _compressed("cifar10_resnet20", 0.9, weights="pretrained")


@pytest.fixture(scope="module")
def resnet20_dir(resnet20: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ht2.save(resnet20, tmp_path_factory.mktemp("export") / "r20")


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_fold_into_conv_computes_conv_then_batchnorm(bias: bool, affine: bool, groups: int) -> None:
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=groups, bias=bias)
    bn = nn.BatchNorm2d(6, affine=affine)
    seq = nn.Sequential(conv, bn)
    _randomize_batchnorms(seq)
    x = torch.randn(2, 4, 7, 7)
    expected = _outputs(seq, x)
    fold_into_conv(conv, bn)
    assert conv.bias is not None
    assert _max_relative_diff(_outputs(conv, x), expected) < 1e-6


def test_resnet20_folds_every_batchnorm_into_the_last_factor(resnet20: nn.Module) -> None:
    folded, report = fold_batchnorms(resnet20, (3, 32, 32))
    bns = [n for n, m in resnet20.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 19 and report.refused == {}
    assert {pair["bn"] for pair in report.folded} == set(bns)
    for pair in report.folded:
        parent = pair["into"].rsplit(".", 1)[0]
        assert isinstance(folded.get_submodule(parent), FactorizedLayer)
        assert pair["into"].endswith(".expand")
        assert type(folded.get_submodule(pair["bn"])) is nn.Identity
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in resnet20.modules())  # original untouched
    x = torch.randn(8, 3, 32, 32)
    assert _max_relative_diff(_outputs(folded, x), _outputs(resnet20, x)) < RELATIVE


@pytest.mark.slow
def test_torchvision_resnet18_folds_including_downsample_branches() -> None:
    model = _compressed("resnet18", 0.5)
    folded, report = fold_batchnorms(model, (3, 224, 224))
    pairs = {pair["bn"]: pair["into"] for pair in report.folded}
    assert len(pairs) == 20 and report.refused == {}
    assert pairs["layer2.0.downsample.1"] == "layer2.0.downsample.0.expand"
    assert pairs["bn1"] == "conv1.expand"
    x = torch.randn(2, 3, 224, 224)
    assert _max_relative_diff(_outputs(folded, x), _outputs(model, x)) < RELATIVE


def test_dense_conv_folds_into_itself() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    _randomize_batchnorms(model)
    folded, report = fold_batchnorms(model, (3, 10, 10))
    assert report.folded == [{"bn": "1", "into": "0"}]
    assert folded[0].bias is not None and type(folded[1]) is nn.Identity
    x = torch.randn(2, 3, 10, 10)
    assert _max_relative_diff(_outputs(folded, x), _outputs(model, x)) < RELATIVE


class ConvOutputReused(nn.Module):
    """The conv's output feeds the BatchNorm and, also, a skip connection."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return F.relu(self.bn(out)) + out


class ConvOutputChangedInPlace(nn.Module):
    """The BatchNorm gets the conv's tensor object, but changed in place first."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        out.mul_(2.0)
        return self.bn(out)


class ConvOutputReturned(nn.Module):
    """The conv's output is returned beside the normalised one (e.g. a feature extractor)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.conv(x)
        return self.bn(out), out


class ConvRunTwice(nn.Module):
    """One conv applied twice, each time followed by its own BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(4)
        self.bn_b = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_b(self.conv(F.relu(self.bn_a(self.conv(x)))))


class BatchNormAfterRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


@pytest.mark.parametrize(
    ("toy", "reason"),
    [
        (ConvOutputReused, "also used elsewhere"),
        (ConvOutputChangedInPlace, "also used elsewhere"),
        (ConvOutputReturned, "also used elsewhere"),
        (ConvRunTwice, "runs 2 times"),
        (BatchNormAfterRelu, "not a Conv2d's output"),
    ],
)
def test_folding_is_refused_when_the_conv_output_is_not_the_batchnorms_alone(
    toy: type[nn.Module], reason: str
) -> None:
    model = toy().eval()
    _randomize_batchnorms(model)
    folded, report = fold_batchnorms(model, (4, 6, 6))
    assert report.folded == []
    assert report.refused and all(reason in why for why in report.refused.values())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == len(report.refused)
    x = torch.randn(2, 4, 6, 6)
    for got, want in zip(
        torch.atleast_1d(_outputs(folded, x)), torch.atleast_1d(_outputs(model, x)), strict=True
    ):
        assert torch.equal(got, want)


def test_shared_weights_are_not_folded() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
    model[2].weight = model[0].weight
    folded, report = fold_batchnorms(model, (4, 5, 5))
    assert report.folded == [] and "shared" in report.refused["1"]


def test_cli_folded_folder_loads_back_exactly(resnet20_dir: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "folded"
    code, stdout, _ = cli(["export", str(resnet20_dir), "--fold-bn", "--out", str(out)])
    assert code == 0 and "folded 19 of 19 BatchNorm2d" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["ht2.json", "model.safetensors"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format_version"] == 2 and len(manifest["folded_bn"]) == 19
    assert manifest["energy"] == json.loads((resnet20_dir / MANIFEST).read_text())["energy"]
    assert json.loads((resnet20_dir / MANIFEST).read_text())["format_version"] == 1
    original = ht2.load(resnet20_dir)
    folded, _ = fold_batchnorms(original, (3, 32, 32))
    loaded = ht2.load(out)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loaded.modules())
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(_outputs(loaded, x), _outputs(folded, x))
    assert _max_relative_diff(_outputs(loaded, x), _outputs(original, x)) < RELATIVE
    again = tmp_path / "again"
    ht2.save(loaded, again)
    assert json.loads((again / MANIFEST).read_text())["folded_bn"] == manifest["folded_bn"]


def test_malformed_folded_list_is_a_clear_error(resnet20_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    main(["export", str(resnet20_dir), "--fold-bn", "--out", str(out)])
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["folded_bn"] = [{"bn": "bn1"}]
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ht2.HT2Error, match="malformed"):
        ht2.load(out)
    manifest["folded_bn"] = [{"bn": "linear", "into": "conv1.expand"}]
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ht2.HT2Error, match="does not fit the model"):
        ht2.load(out)


def test_cli_onnx_agrees_with_pytorch(resnet20_dir: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "onnx"
    code, stdout, _ = cli(
        ["export", str(resnet20_dir), "--fold-bn", "--format", "onnx", "--out", str(out)]
    )
    assert code == 0 and "max abs diff" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "onnx_check.json"]
    check = json.loads((out / "onnx_check.json").read_text())
    assert check["onnx"]["relative_diff"] < 1e-4 and len(check["fold_bn"]["folded"]) == 19
    assert check["dtype"] == check["onnx"]["dtype"] == "float32"
    runner = OrtRunner(out / "model.onnx", threads=1)
    x = torch.randn(5, 3, 32, 32)  # a batch size the export never saw
    assert _max_relative_diff(runner(x), _outputs(ht2.load(resnet20_dir), x)) < 1e-4


def test_missing_onnx_packages_name_the_extra(
    resnet20_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "onnx"
    code, stdout, stderr = cli(["export", str(resnet20_dir), "--format", "onnx", "--out", str(out)])
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "pip install 'ht2[onnx]'" in stderr
    assert not out.exists()


def _two_convs() -> nn.Module:
    """conv -> BatchNorm -> ReLU -> conv -> pool, BatchNorm statistics far from the identity."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 5, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    _randomize_batchnorms(model)
    return model.eval()


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-4), ("float16", 1e-2)])
def test_onnx_export_runs_in_its_dtype_and_agrees_with_pytorch_in_it(
    dtype: str, tolerance: float, tmp_path: Path
) -> None:
    model, size = _two_convs(), (3, 12, 12)
    path = tmp_path / "model.onnx"
    export_onnx(model, size, path, dtype=dtype)
    check = check_onnx(model, path, size, dtype=dtype)
    assert check.dtype == dtype and check.tolerance == tolerance
    assert check.relative_diff < tolerance and next(model.parameters()).dtype == torch.float32
    runner = OrtRunner(path, threads=1)
    assert runner.dtype == getattr(torch, dtype)
    x = torch.randn(3, *size)  # a batch size the check never used
    found = runner(x)
    assert found.dtype == getattr(torch, dtype)
    expected = _outputs(copy.deepcopy(model).to(getattr(torch, dtype)), x.to(found.dtype))
    assert _max_relative_diff(found.float(), expected.float()) < tolerance


def test_onnx_export_refuses_a_dtype_onnxruntime_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ht2.HT2Error, match="dtype must be one of float32, float16"):
        export_onnx(_two_convs(), (3, 8, 8), tmp_path / "model.onnx", dtype="bfloat16")
    assert not (tmp_path / "model.onnx").exists()


def test_onnxruntime_cpu_has_no_bfloat16_conv(tmp_path: Path) -> None:
    """Why --dtype bfloat16 is refused: a bfloat16 Conv graph (valid from opset 22) does not
    load in ONNX Runtime's CPU provider. Should it ever load, ORT_CPU_DTYPES must grow."""
    model = nn.Conv2d(3, 4, 3).eval().to(torch.bfloat16)
    path = tmp_path / "bf16.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 6, 6, dtype=torch.bfloat16),),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["output"],
            opset_version=22,
        )
    with pytest.raises(ht2.HT2Error, match="cannot load.*Conv"):
        OrtRunner(path, threads=1)


def test_cli_onnx_float16_records_its_dtype(resnet20_dir: Path, tmp_path: Path, cli) -> None:
    import onnx

    out = tmp_path / "fp16"
    args = ["export", str(resnet20_dir), "--fold-bn", "--format", "onnx", "--dtype", "float16"]
    code, stdout, _ = cli([*args, "--out", str(out)])
    assert code == 0 and "both in float16" in stdout and "tolerance 0.01 for float16" in stdout
    check = json.loads((out / "onnx_check.json").read_text())
    assert check["dtype"] == check["onnx"]["dtype"] == "float16"
    assert check["onnx"]["relative_diff"] < 1e-2
    graph = onnx.load(str(out / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--format", "onnx", "--dtype", "bfloat16"], "runs only float32 and float16"),
        (["--dtype", "float16"], "--dtype float16 applies to --format onnx"),
        (["--format", "onnx", "--dtype", "int8"], "invalid choice: 'int8'"),
    ],
)
def test_a_dtype_export_cannot_take_is_one_line(
    resnet20_dir: Path, tmp_path: Path, cli, extra: list[str], needle: str
) -> None:
    out = tmp_path / "o"
    code, stdout, stderr = cli(["export", str(resnet20_dir), *extra, "--out", str(out)])
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert needle in stderr and not out.exists()


def test_export_needs_a_model_folder(tmp_path: Path, cli) -> None:
    code, _, stderr = cli(["export", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2 and "ht2 compress" in stderr


def test_export_refuses_a_non_empty_output(resnet20_dir: Path, tmp_path: Path, cli) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    code, _, stderr = cli(["export", str(resnet20_dir), "--out", str(tmp_path / "taken")])
    assert code == 2 and "--force" in stderr
    assert (tmp_path / "taken" / "x").read_text() == "keep"


def test_a_wrong_fold_is_caught_by_the_output_check(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ConvOutputReused().eval()
    _randomize_batchnorms(model)
    monkeypatch.setattr(
        "ht2.export.fold_bn.foldable_pairs", lambda model, inputs: ({"bn": "conv"}, {})
    )
    with pytest.raises(ht2.HT2Error, match="cannot be folded safely"):
        fold_batchnorms(model, (4, 6, 6))


def test_an_opset_the_model_cannot_take_is_one_line_and_nothing_else(
    resnet20_dir: Path, tmp_path: Path
) -> None:
    """The TorchScript exporter prints the whole graph on standard output when it refuses."""
    import subprocess
    import sys

    out = tmp_path / "onnx"
    argv = ["export", str(resnet20_dir), "--format", "onnx", "--opset", "7", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "ht2", *argv], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ht2: error: torch.onnx.export failed for this model: ")
    assert not out.exists()
