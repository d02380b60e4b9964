"""Numerics: non-finite weights refused by name, any scale decomposes alike, numeric flags
refused while parsing (before any model or data is touched)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ht2 import models
from ht2.cli.main import build_parser, main
from ht2.decomp import (
    cp_decompose,
    cp_reconstruct,
    ht2_decompose,
    ht2_reconstruct,
    spatial_svd,
    truncated_svd,
    tucker1,
    tucker2_decompose,
    tucker2_reconstruct,
)
from ht2.errors import HT2Error
from ht2.layers import FactorizedLayer
from ht2.planning import compress
from ht2.surgery.allocate import allocate
from ht2.surgery.finite import decomposing
from ht2.surgery.targets import Target
from tests._shared import rel_error

compress_module = importlib.import_module("ht2.planning.planner")


def _resnet20() -> nn.Module:
    return models.create("cifar10_resnet20")


@pytest.mark.parametrize(
    ("value", "what"), [(float("nan"), "1 NaN"), (float("inf"), "1 Inf"), (-float("inf"), "1 Inf")]
)
def test_non_finite_weight_is_refused_naming_the_layer(value: float, what: str) -> None:
    model = _resnet20()
    with torch.no_grad():
        model.get_submodule("layer2.1.conv2").weight[3, 2, 1, 0] = value
    with pytest.raises(HT2Error, match=rf"layer 'layer2.1.conv2' has {what} in its weight"):
        compress(model, energy=0.8)
    assert not any(isinstance(m, FactorizedLayer) for m in model.modules())


def test_non_finite_bias_is_refused_naming_the_layer() -> None:
    model = _resnet20()
    with torch.no_grad():
        model.linear.bias[:2] = float("nan")
    with pytest.raises(HT2Error, match=r"layer 'linear' has 2 NaN in its bias"):
        compress(model, energy=0.8)


def test_a_spectrum_allocation_refuses_non_finite_weights_too() -> None:
    model = _resnet20()
    with torch.no_grad():
        model.get_submodule("layer3.0.conv1").weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(HT2Error, match=r"layer 'layer3.0.conv1' has 1 Inf in its weight"):
        allocate(model, "ht2", Target("params", 2.0), "spectrum", torch.zeros(1, 3, 32, 32))


def test_a_layer_left_dense_may_hold_anything() -> None:
    model = _resnet20()
    with torch.no_grad():
        model.linear.weight[0, 0] = float("nan")
    report = compress(model, energy=0.8, exclude=["linear"])
    assert report.replaced and "linear" not in {layer.name for layer in report.replaced}


def test_float64_weights_beyond_1e150_are_refused() -> None:
    model = nn.Sequential(nn.Conv2d(4, 6, 3), nn.Conv2d(6, 6, 3)).double()
    with torch.no_grad():
        model[1].weight.mul_(1e160)
    with pytest.raises(HT2Error, match=r"layer '1' has entries as large as"):
        compress(model, energy=0.8, keep_if_larger=False)


def test_cli_refuses_a_weights_file_with_nan(tmp_path: Path, capsys) -> None:
    state = _resnet20().state_dict()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    out = tmp_path / "o"
    assert main(["compress", "cifar10_resnet20", "--weights", str(weights), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "NaN" in err
    assert "'layer1.0.conv1.weight'" in err
    assert not out.exists()


def test_a_linear_algebra_failure_is_one_error_naming_the_layer(monkeypatch) -> None:
    def failing(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(compress_module, "factorize", failing)
    with pytest.raises(HT2Error, match=r"decomposing layer 'conv1' failed \(linalg.eigh: The"):
        compress(_resnet20(), energy=0.8)


def test_decomposing_passes_other_errors_through() -> None:
    with pytest.raises(KeyError), decomposing("x"):
        raise KeyError("not linear algebra")


def _kernel(dtype: torch.dtype) -> torch.Tensor:
    """A 12 x 10 x 3 x 3 kernel with a decaying spectrum, so truncation loses something."""
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(12, 10, 3, 3, generator=generator, dtype=torch.float64)
    decay = torch.logspace(0, -3, 12, dtype=torch.float64)[:, None, None, None]
    return (base * decay).to(dtype)


def _svd_rebuild(factors) -> torch.Tensor:
    return torch.einsum("tr,rchw->tchw", factors.second, factors.first)


def _spatial_rebuild(factors) -> torch.Tensor:
    return torch.einsum("trw,rch->tchw", factors.second[:, :, 0, :], factors.first[..., 0])


DECOMPOSITIONS: dict[str, tuple[Callable, Callable]] = {
    "ht2": (lambda k: ht2_decompose(k, energy=0.8, sweeps=2), ht2_reconstruct),
    "tucker2": (lambda k: tucker2_decompose(k, energy=0.8, hooi_sweeps=2), tucker2_reconstruct),
    "cp": (lambda k: cp_decompose(k, rank=6), cp_reconstruct),
    "svd": (lambda k: tucker1(k, energy=0.8), _svd_rebuild),
    "spatial_svd": (lambda k: spatial_svd(k, energy=0.8), _spatial_rebuild),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e30, 1e-30])
@pytest.mark.parametrize("method", list(DECOMPOSITIONS))
def test_a_scaled_kernel_decomposes_as_the_unscaled_one(method, scale, dtype) -> None:
    decompose, rebuild = DECOMPOSITIONS[method]
    kernel = _kernel(dtype)
    plain = decompose(kernel)
    scaled = decompose(kernel * scale)
    rebuilt = rebuild(scaled)
    assert rebuilt.dtype == dtype and bool(torch.isfinite(rebuilt).all())
    tolerance = 1e-4 if dtype == torch.float32 else 1e-9
    assert rel_error(rebuilt, kernel * scale) == pytest.approx(
        rel_error(rebuild(plain), kernel), abs=tolerance
    )
    assert scaled.rel_error == pytest.approx(plain.rel_error, abs=tolerance)
    ranks = getattr(plain, "ranks", None) or plain.rank
    assert (getattr(scaled, "ranks", None) or scaled.rank) == ranks


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_a_scaled_matrix_keeps_its_svd(scale: float) -> None:
    matrix = _kernel(torch.float32).reshape(12, -1).T.contiguous()  # tall: the other branch
    plain, scaled = truncated_svd(matrix, rank=5), truncated_svd(matrix * scale, rank=5)
    product = scaled.second @ scaled.first
    assert rel_error(product, matrix * scale) == pytest.approx(plain.rel_error, abs=1e-4)


def test_an_ill_conditioned_kernel_decomposes() -> None:
    """Out-channel singular values from 1 down to 1e-30: factors as good as they say, in
    float64 and float32 alike."""
    generator = torch.Generator().manual_seed(2)
    u = torch.linalg.qr(torch.randn(16, 16, generator=generator, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(72, 16, generator=generator, dtype=torch.float64))[0]
    values = torch.logspace(0, -30, 16, dtype=torch.float64)
    kernel = (u * values @ v.T).reshape(16, 8, 3, 3)
    for decompose, rebuild in DECOMPOSITIONS.values():
        exact, single = decompose(kernel), decompose(kernel.float())
        assert rel_error(rebuild(exact), kernel) == pytest.approx(exact.rel_error, abs=1e-9)
        assert rel_error(rebuild(single), kernel) == pytest.approx(exact.rel_error, abs=1e-4)


def test_an_all_zero_kernel_decomposes_to_zero() -> None:
    kernel = torch.zeros(6, 4, 3, 3)
    for decompose, rebuild in DECOMPOSITIONS.values():
        assert torch.equal(rebuild(decompose(kernel)), kernel)


def test_the_math_refuses_nan_with_a_value_error() -> None:
    kernel = _kernel(torch.float32)
    kernel[0, 0, 0, 0] = float("nan")
    for decompose, _ in DECOMPOSITIONS.values():
        with pytest.raises(ValueError, match="NaN or Inf"):
            decompose(kernel)


FINETUNE = ["finetune", "no-such-folder", "--data", "no-such-data"]
TRAIN = ["train", "cifar10_resnet20", "--data", "no-such-data"]
COMPRESS = ["compress", "cifar10_resnet20", "--random-init"]
CALIBRATE = ["calibrate", "no-such-folder", "--data", "no-such-data"]

BAD_FLAGS = [
    *[(FINETUNE, "--lr", value) for value in ("-1", "0", "nan", "inf", "-inf", "abc")],
    *[(FINETUNE, "--wd", value) for value in ("-1", "nan", "inf")],
    *[(FINETUNE, "--momentum", value) for value in ("nan", "-0.1", "1", "1.5")],
    *[(FINETUNE, "--epochs", value) for value in ("0", "-1", "2.5")],
    (FINETUNE, "--batch-size", "0"),
    (FINETUNE, "--max-steps", "0"),
    (FINETUNE, "--step-size", "0"),
    (FINETUNE, "--gamma", "0"),
    (FINETUNE, "--gamma", "1.5"),
    (FINETUNE, "--label-smoothing", "nan"),
    (FINETUNE, "--label-smoothing", "1"),
    (FINETUNE, "--clip-grad", "0"),
    *[(FINETUNE, "--ema", value) for value in ("1", "-0.1", "nan")],
    (FINETUNE, "--lighting", "-0.1"),
    (FINETUNE, "--workers", "-1"),
    (FINETUNE, "--train-limit", "0"),
    (FINETUNE, "--eval-limit", "-5"),
    *[(FINETUNE, "--temperature", value) for value in ("0", "-4", "nan", "inf")],
    *[(FINETUNE, "--distill-weight", value) for value in ("-0.5", "1.5", "nan")],
    (FINETUNE, "--calib-images", "0"),
    (TRAIN, "--lr", "nan"),
    (TRAIN, "--wd", "inf"),
    (COMPRESS, "--energy", "nan"),
    (COMPRESS, "--energy", "inf"),
    (COMPRESS, "--target-params", "inf"),
    (COMPRESS, "--target-params", "nan"),
    (COMPRESS, "--target-macs", "-2"),
    (COMPRESS, "--calib-images", "0"),
    (COMPRESS, "--batch-size", "0"),
    (COMPRESS, "--threads", "-1"),
    (COMPRESS, "--round-ranks", "0"),
    (COMPRESS, "--refine-sweeps", "-1"),
    (CALIBRATE, "--images", "0"),
    (CALIBRATE, "--images", "-3"),
    (CALIBRATE, "--batch-size", "0"),
    (CALIBRATE, "--workers", "-1"),
]


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    BAD_FLAGS,
    ids=[f"{command[0]}{flag}={value}" for command, flag, value in BAD_FLAGS],
)
def test_bad_numeric_flag_is_one_line_naming_it(tmp_path, capsys, command, flag, value) -> None:
    out = tmp_path / "o"
    assert main([*command, "--out", str(out), f"{flag}={value}"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"argument {flag}" in lines[0] and value in lines[0]
    assert "--limit" not in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("energy", ["0.5", "0.9"])  # 0.9 is the default: still given
@pytest.mark.parametrize("target", ["--target-params", "--target-macs"])
def test_energy_and_a_size_target_are_refused_together(tmp_path, capsys, energy, target) -> None:
    out = tmp_path / "o"
    args = [*COMPRESS, "--energy", energy, target, "2", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "not allowed with argument" in err and "--energy" in err and target in err


def _parse(args: list[str]):
    return build_parser().parse_args(args)


def test_a_target_alone_keeps_the_default_energy() -> None:
    args = _parse([*COMPRESS, "--target-params", "2", "--out", "o"])
    assert args.target_params == 2 and args.energy == 0.9


def test_sane_numeric_flags_are_read() -> None:
    args = _parse(
        [
            *FINETUNE,
            "--out",
            "o",
            "--lr",
            "0.05",
            "--wd",
            "0",
            "--momentum",
            "0",
            "--label-smoothing",
            "0.1",
            "--gamma",
            "1",
            "--distill-weight",
            "1",
            "--temperature",
            "2",
            "--workers",
            "0",
        ]
    )
    assert (args.lr, args.weight_decay, args.momentum, args.label_smoothing) == (0.05, 0, 0, 0.1)
    assert (args.gamma, args.distill_weight, args.distill_temperature, args.workers) == (1, 1, 2, 0)


def test_a_buffer_holding_inf_on_purpose_loads(tmp_path: Path) -> None:
    """Only parameters and BatchNorm statistics are judged: a clamp buffer may be Inf."""
    import ht2
    from ht2.models.weights import load_weights

    class Clamped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.register_buffer("limit", torch.tensor(float("inf")))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).clamp(max=self.limit)

    model = Clamped()
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    load_weights(Clamped(), weights)
    out = tmp_path / "m"
    ht2.save(model, out)
    assert torch.isinf(ht2.load(out, model=Clamped()).limit)
