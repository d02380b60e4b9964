"""Data-aware HT-2: patches and statistics are exact, whitening by the identity is plain,
the refit lowers the output error, and `ht2 compress --data-aware` runs end to end."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import ht2
from ht2.dataaware import DataAwareOptions, LayerStats, compress_data_aware, damped_root
from ht2.dataaware.patches import flat_weight, layer_patches, output_columns
from ht2.dataaware.refit import refit_all, refit_dense, refit_expand
from ht2.dataaware.whiten import whitened_factorize
from ht2.errors import HT2Error
from ht2.layers import factorize
from tests._shared import write_image_tree


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(12)
        self.conv3 = nn.Conv2d(12, 16, 3, padding=1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.bn(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        return self.head(x.mean(dim=(2, 3)))


def _stats(layer: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> LayerStats:
    weight = flat_weight(layer)
    stats = LayerStats.empty(weight.shape[1], weight.shape[0])
    stats.add(layer_patches(layer, inputs), output_columns(layer, targets))
    return stats


@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding": 1},
        {"padding": 1, "stride": 2, "padding_mode": "reflect"},
        {"padding": "same", "dilation": (2, 1)},
        {"padding": (2, 0), "padding_mode": "circular", "kernel_size": (3, 5)},
        {"padding": "valid"},
    ],
)
def test_patches_times_the_weight_is_the_conv_output(kwargs: dict) -> None:
    conv = nn.Conv2d(4, 6, kwargs.pop("kernel_size", 3), bias=False, **kwargs)
    x = torch.randn(2, 4, 9, 10)
    product = flat_weight(conv) @ layer_patches(conv, x)
    torch.testing.assert_close(product, output_columns(conv, conv(x)), atol=1e-5, rtol=1e-5)


def test_stats_error_equals_the_direct_sum_of_squares() -> None:
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x, y = torch.randn(3, 4, 8, 8), torch.randn(3, 6, 8, 8)
    stats = _stats(conv, x, y)
    weight, bias = torch.randn(6, 36), torch.randn(6)
    direct = (output_columns(conv, y) - weight @ layer_patches(conv, x) - bias[:, None]).square()
    assert float(stats.error_tensor(weight, bias)) == pytest.approx(float(direct.sum()), rel=1e-4)


@pytest.mark.parametrize(
    ("layer", "method", "ranks"),
    [
        (nn.Conv2d(8, 10, 3, padding=1), "ht2", {"r1": 4, "r13": 5, "r3": 4}),
        (nn.Conv2d(8, 10, 3, padding=1), "svd", {"r": 4}),
        (nn.Conv2d(8, 10, 3, padding=1), "tucker2", {"r_in": 4, "r_out": 5}),
        (nn.Linear(8, 10), "svd", {"r": 3}),
    ],
)
def test_whitening_by_the_identity_equals_the_plain_factors(layer, method, ranks) -> None:
    root = damped_root(torch.eye(8), damping=0.0)
    plain = factorize(layer, method, ranks=ranks)
    whitened = whitened_factorize(layer, method, root, ranks=ranks)
    assert whitened.ranks == plain.ranks
    torch.testing.assert_close(whitened.dense_weight(), plain.dense_weight(), atol=1e-5, rtol=1e-5)
    assert whitened.rel_error == pytest.approx(plain.rel_error, abs=1e-5)


def test_whitening_lowers_the_output_error_on_correlated_inputs() -> None:
    conv = nn.Conv2d(8, 10, 3, padding=1)
    mixing = torch.randn(8, 8) * torch.logspace(0, -2, 8)
    x = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(64, 8, 6, 6))
    stats = _stats(conv, x, conv(x).detach())
    ranks = {"r1": 3, "r13": 4, "r3": 4}
    plain = factorize(conv, "ht2", ranks=ranks)
    root = damped_root(stats.channel_covariance(8), damping=1e-4)
    whitened = whitened_factorize(conv, "ht2", root, ranks=ranks)
    errors = [
        stats.rel_error(f.dense_weight().reshape(10, -1), f.expand.bias) for f in (plain, whitened)
    ]
    assert errors[1] < 0.9 * errors[0]


def test_refit_lowers_the_layer_output_error_on_a_tiny_cnn() -> None:
    model = TinyCNN().eval()
    images = torch.randn(32, 3, 12, 12)
    with torch.no_grad():
        seen = torch.relu(model.conv1(images))
        noisy = seen + 0.1 * torch.randn_like(seen)  # what a compressed conv1 would hand on
        stats = _stats(model.conv2, noisy, model.conv2(seen))
        factors = factorize(model.conv2, "ht2", ranks={"r1": 3, "r13": 4, "r3": 4})
        before = stats.rel_error(factors.dense_weight().reshape(12, -1), None)
        refit_expand(factors, stats)
        after_last = stats.rel_error(factors.dense_weight().reshape(12, -1), None)
    assert refit_all(factors, stats, iterations=50)
    after_all = stats.rel_error(factors.dense_weight().reshape(12, -1), None)
    assert after_last < 0.9 * before
    assert after_all < after_last


def test_compress_data_aware_beats_plain_on_every_layer_of_a_tiny_cnn() -> None:
    model = TinyCNN().eval()
    twin = copy.deepcopy(model)
    images = torch.randn(48, 3, 12, 12)
    report = compress_data_aware(
        model,
        images.split(16),
        energy=0.6,
        calib_images=48,
        options=DataAwareOptions(mode="both", iterations=30),
        example_input=torch.zeros(1, 3, 12, 12),
    )
    replaced = report.replaced
    assert [layer.name for layer in replaced] == ["conv1", "conv2", "conv3", "head"]
    for layer in replaced:
        errors = layer.calib_errors
        assert set(errors) == {"dense", "plain", "whiten", "refit_last", "refit_all"}
        assert errors["refit_all"] <= min(errors["plain"], errors["whiten"]) + 1e-9
    assert report.data_aware["held_out"] == 12 and report.data_aware["images"] == 36
    assert isinstance(model.conv2, ht2.layers.HT2Conv2d)
    again = ht2.compress(twin, energy=0.6, example_input=torch.zeros(1, 3, 12, 12))
    assert report.params_after == again.params_after  # ranks of the plain rule: same size
    assert model(images[:2]).shape == (2, 5)


def test_a_layer_with_a_huge_fan_in_keeps_its_plain_factors(monkeypatch) -> None:
    monkeypatch.setattr("ht2.dataaware.api.MAX_FAN_IN", 8 * 9 - 1)  # conv2 is 8 x 3 x 3 in
    model, twin = TinyCNN().eval(), TinyCNN().eval()
    twin.load_state_dict(model.state_dict())
    images = torch.randn(32, 3, 12, 12)
    report = compress_data_aware(
        model,
        images.split(16),
        energy=0.6,
        calib_images=32,
        options=DataAwareOptions(mode="refit", iterations=5),
        example_input=torch.zeros(1, 3, 12, 12),
    )
    ht2.compress(twin, energy=0.6, example_input=torch.zeros(1, 3, 12, 12))
    assert "kept the plain factors" in report.data_aware["notes"]["conv2"]
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv2"].calib_errors is None and layers["conv1"].calib_errors
    assert torch.equal(model.conv2.expand.weight, twin.conv2.expand.weight)


def test_refit_dense_recovers_a_known_linear_map() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    truth = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(16, 4, 8, 8)
    with torch.no_grad():
        stats = _stats(conv, x, truth(x) + 0.01 * torch.randn(16, 6, 8, 8))
    assert refit_dense(conv, stats, ridge=0.0)
    torch.testing.assert_close(conv.weight, truth.weight, atol=2e-3, rtol=0)
    torch.testing.assert_close(conv.bias, truth.bias, atol=2e-3, rtol=0)
    assert not refit_dense(conv, stats, ridge=0.0)  # already optimal: left as it is


def _head_kept_dense(options: DataAwareOptions, **kwargs) -> tuple[nn.Module, dict, nn.Module]:
    """TinyCNN compressed with its head forced to a rank too large to pay (so kept dense)."""
    model = TinyCNN().eval()
    twin = copy.deepcopy(model)
    images = torch.randn(32, 3, 12, 12)
    report = compress_data_aware(
        model,
        images.split(16),
        energy=0.6,
        calib_images=32,
        options=options,
        example_input=torch.zeros(1, 3, 12, 12),
        layer_ranks=None if kwargs.get("exclude") else {"head": {"r": 5}},
        **kwargs,
    )
    return model, {layer.name: layer for layer in report.layers}, twin


def test_a_layer_kept_dense_after_compressed_ones_is_refitted() -> None:
    model, layers, twin = _head_kept_dense(DataAwareOptions(mode="refit", refit="last"))
    assert type(model.head) is nn.Linear and layers["head"].method == "dense"
    errors = layers["head"].calib_errors
    assert errors["refit_dense"] < errors["dense"]
    assert not torch.equal(model.head.weight, twin.head.weight)


@pytest.mark.parametrize(
    ("options", "kwargs"),
    [
        (DataAwareOptions(mode="refit", refit="last", refit_dense=False), {}),
        (DataAwareOptions(mode="whiten"), {}),
        (DataAwareOptions(mode="refit", refit="last"), {"exclude": ["head"]}),
    ],
)
def test_dense_layers_stay_as_they_were_when_not_asked_or_excluded(options, kwargs) -> None:
    model, layers, twin = _head_kept_dense(options, **kwargs)
    assert layers["head"].calib_errors is None
    assert torch.equal(model.head.weight, twin.head.weight)


def test_too_few_images_and_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(HT2Error, match="only 8 calibration images, fewer than the 16 needed"):
        compress_data_aware(TinyCNN(), [torch.randn(8, 3, 12, 12)], calib_images=16)
    with pytest.raises(HT2Error, match="--data-aware must be one of"):
        compress_data_aware(
            TinyCNN(), [torch.randn(8, 3, 12, 12)], calib_images=8, options=DataAwareOptions("x")
        )


def _refit_cli(tmp_path: Path, cli, refit: str) -> tuple[str, Path]:
    """`ht2 compress --data-aware refit --refit REFIT --json` of a random ResNet-20 on 12
    images: its stdout and the folder it wrote."""
    data = write_image_tree(tmp_path / "data", per_class=4)
    out = tmp_path / "r20"
    args = ["compress", "cifar10_resnet20", "--random-init", "--energy", "0.7"]
    args += ["--data", str(data), "--calib-images", "12", "--data-aware", "refit"]
    code, stdout, _ = cli([*args, "--refit", refit, "--json", "--out", str(out)])
    assert code == 0
    return stdout, out


def test_cli_data_aware_writes_a_model_with_calibration_errors(tmp_path: Path, cli) -> None:
    stdout, out = _refit_cli(tmp_path, cli, "last")
    report = json.loads(stdout)
    layer = next(item for item in report["layers"] if item["name"] == "layer2.0.conv1")
    assert set(layer["calib_errors"]) == {"dense", "plain", "refit_last"}
    assert layer["calib_errors"]["refit_last"] <= layer["calib_errors"]["plain"]
    assert report["data_aware"]["images"] == 9 and report["data_aware"]["held_out"] == 3
    model = ht2.load(out)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    code, stdout, _ = cli(["report", str(out)])
    assert code == 0 and "calib err" in stdout
    assert "data-aware (refit) on 9 images; output gap to the original on 3 held-out" in stdout
    plain, fitted = layer["calib_errors"]["plain"], layer["calib_errors"]["refit_last"]
    assert f"{plain:.3f} -> {fitted:.3f}" in stdout


def test_cli_refit_blocks_records_and_reports_each_block(tmp_path, cli) -> None:
    stdout, out = _refit_cli(tmp_path, cli, "blocks")
    blocks = json.loads(stdout)["data_aware"]["blocks"]
    assert len(blocks) == 9 and all(set(r) == {"before", "after", "kept"} for r in blocks.values())
    assert all(r["kept"] == (r["after"] < r["before"]) for r in blocks.values())
    assert ht2.load(out)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    code, stdout, _ = cli(["report", str(out)])
    kept = sum(r["kept"] for r in blocks.values())
    assert code == 0 and f"block fit kept in {kept} of 9 blocks" in stdout
    assert "refitted on 9 training images, then fitted block by block" in stdout


@pytest.mark.slow
def test_cli_allocation_then_data_aware_refits_the_dense_layers_after(tmp_path, cli) -> None:
    data = write_image_tree(tmp_path / "data", per_class=4)
    args = ["compress", "cifar10_resnet20", "--random-init", "--target-params", "2"]
    args += ["--allocate", "spectrum", "--data", str(data), "--calib-images", "12"]
    args += ["--data-aware", "refit", "--refit", "last", "--json", "--out", str(tmp_path / "o")]
    code, stdout, _ = cli(args)
    assert code == 0
    report = json.loads(stdout)
    assert report["target"]["allocation"] == "spectrum" and report["target"]["met"]
    layers = report["layers"]
    first = next(i for i, layer in enumerate(layers) if layer["method"] != "dense")
    kept = [layer for layer in layers[first:] if layer["method"] == "dense"]
    assert kept and all("dense" in layer["calib_errors"] for layer in kept)
    assert all(layer["calib_errors"] is None for layer in layers[:first])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data-aware", "both"], "--data-aware needs --data PATH"),
        (["--data", "DATA", "--data-aware", "both", "--calib-images", "0"], "at least 1"),
        (["--data", "DATA", "--data-aware", "both", "--calib-images", "99"], "only 12 training"),
        (["--rank-from", "whitened"], "only apply with --data-aware"),
        (["--no-refit-dense"], "only apply with --data-aware"),
    ],
)
def test_cli_bad_data_aware_input_is_one_line(tmp_path: Path, cli, extra, message) -> None:
    data = write_image_tree(tmp_path / "data", per_class=4)
    extra = [str(data) if item == "DATA" else item for item in extra]
    out = tmp_path / "o"
    args = ["compress", "cifar10_resnet20", "--random-init", *extra, "--out", str(out)]
    code, _, stderr = cli(args)
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()
