"""Subclasses of Conv2d and Linear: factorized from what their forward computes, or left
dense with a reason; never a crash. Full rank is exact and save/load is bit-exact."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ht2
from ht2.layers import (
    HT2Conv2d,
    SamePadConv2d,
    UnsupportedLayer,
    effective_layer,
    effective_spec,
    factorize,
)
from ht2.layers.base import DENSE_FORM
from ht2.surgery import apply_plan, collect_plan
from ht2.surgery.policy import paper_policy
from tests._shared import rel_error

REL_TOL = 1e-4


class TaggedConv(nn.Conv2d):
    """Only adds an attribute: nn.Conv2d's forward."""

    tag = "mine"


class PlainForwardConv(nn.Conv2d):
    """Overrides forward, but computes a plain convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


class SquaredConv(nn.Conv2d):
    """A forward no plain convolution reproduces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) ** 2


class StandardisedConv(nn.Conv2d):
    """Weight standardisation inside forward, written by a user (not timm's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        std = w.std(dim=(1, 2, 3), keepdim=True)
        return self._conv_forward(x, (w - mean) / (std + 1e-5), self.bias)


class DynamicSameConv(nn.Conv2d):
    """TensorFlow 'SAME' padding worked out from each input, written by a user."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(
            x.shape[:-3:-1],
            self.kernel_size[::-1],
            self.stride[::-1],
            self.dilation[::-1],
            strict=True,
        ):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class PlainLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class ScaledLinear(nn.Linear):
    """A weight scaled inside forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * 0.5, self.bias)


class Net(nn.Module):
    """stem conv, a 3x3 stride-2 conv of class `conv`, then a 1x1 conv and a head `linear`."""

    def __init__(self, conv: type[nn.Conv2d] = nn.Conv2d, linear: type[nn.Linear] = nn.Linear):
        super().__init__()
        padding = 0 if conv is DynamicSameConv else 1
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = conv(8, 12, 3, stride=2, padding=padding)
        self.mix = conv(12, 10, 1)
        self.head = linear(10, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mix(torch.relu(self.body(torch.relu(self.stem(x)))))
        return self.head(x.mean(dim=(2, 3)))


def _compress_and_round_trip(
    make: type[nn.Module] | object, tmp_path: Path, sizes=((15, 17),)
) -> ht2.CompressionReport:
    """Compress a fresh model at full rank; outputs must match the original at every input
    size, and a saved and loaded copy must match the compressed model bit for bit."""
    torch.manual_seed(0)
    model = make().eval()
    inputs = [torch.randn(2, 3, *size) for size in sizes]
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    report = ht2.compress(model, energy=1.0, keep_if_larger=False, example_input=inputs[0][:1])
    with torch.no_grad():
        for x, before in zip(inputs, expected, strict=True):
            assert rel_error(model(x), before) < REL_TOL
    ht2.save(model, tmp_path / "out", report)
    torch.manual_seed(1)
    loaded = ht2.load(tmp_path / "out", model=make())
    with torch.no_grad():
        for x in inputs:
            assert torch.equal(loaded(x), model(x))
    return report


def _layer(report: ht2.CompressionReport, name: str):
    return next(layer for layer in report.layers if layer.name == name)


def test_subclass_keeping_the_plain_forward_is_factorized(tmp_path: Path) -> None:
    report = _compress_and_round_trip(lambda: Net(TaggedConv), tmp_path)
    assert _layer(report, "body").method == "ht2"
    assert _layer(report, "mix").method == "svd"


def test_overridden_plain_forward_is_factorized(tmp_path: Path) -> None:
    report = _compress_and_round_trip(lambda: Net(PlainForwardConv, PlainLinear), tmp_path)
    assert [layer.method for layer in report.layers] == ["svd", "ht2", "svd", "svd"]
    assert _layer(report, "body").type == "PlainForwardConv"


def test_inexpressible_forward_is_left_dense_with_its_reason(tmp_path: Path) -> None:
    model = Net(SquaredConv)
    report = _compress_and_round_trip(lambda: Net(SquaredConv), tmp_path)
    body = _layer(report, "body")
    assert body.method == "dense"
    assert "SquaredConv overrides forward" in body.reason and body.reason.endswith("left dense")
    assert _layer(report, "stem").method == "svd"
    with pytest.raises(UnsupportedLayer, match="SquaredConv overrides forward"):
        factorize(model.body, "ht2", energy=1.0)


def test_weight_standardised_subclass_is_factorized_from_its_effective_weight(
    tmp_path: Path,
) -> None:
    report = _compress_and_round_trip(lambda: Net(StandardisedConv), tmp_path)
    assert _layer(report, "body").method == "ht2"
    assert effective_spec(StandardisedConv(8, 12, 3)).derived_weight


def test_derived_weight_cannot_run_as_a_dense_form() -> None:
    layer = factorize(StandardisedConv(8, 12, 3, padding=1), "ht2", energy=1.0)
    assert layer.spec.derived_weight and DENSE_FORM not in layer.available_forms()
    with pytest.raises(ht2.HT2Error, match="cannot run as 'dense'"):
        layer.in_form(DENSE_FORM)
    plain = factorize(PlainForwardConv(8, 12, 3, padding=1), "ht2", energy=1.0)
    assert DENSE_FORM in plain.available_forms()


def test_dynamic_same_padding_is_kept_at_every_input_size(tmp_path: Path) -> None:
    sizes = ((15, 17), (16, 16), (9, 20))
    report = _compress_and_round_trip(lambda: Net(DynamicSameConv), tmp_path, sizes)
    assert _layer(report, "body").method == "ht2"
    assert effective_spec(DynamicSameConv(8, 12, 3, stride=2)).pad_same


def test_linear_subclasses_are_factorized(tmp_path: Path) -> None:
    report = _compress_and_round_trip(lambda: Net(linear=ScaledLinear), tmp_path)
    assert _layer(report, "head").method == "svd"
    assert effective_spec(ScaledLinear(10, 5)).derived_weight
    assert not effective_spec(PlainLinear(10, 5)).derived_weight


def test_plain_layers_are_their_own_effective_layer() -> None:
    conv, linear = nn.Conv2d(3, 4, 3), nn.Linear(3, 4)
    assert effective_layer(conv).dense is conv and effective_layer(linear).dense is linear


def test_probing_leaves_the_global_random_state_alone() -> None:
    conv = PlainForwardConv(4, 6, 3)
    before = torch.get_rng_state()
    effective_layer(conv)
    assert torch.equal(torch.get_rng_state(), before)


def test_layer_with_forward_hooks_stays_dense() -> None:
    conv = nn.Conv2d(4, 6, 3)
    conv.register_forward_hook(lambda module, inputs, output: None)
    decision = paper_policy(conv, is_first_conv=False)
    assert decision.method is None and "forward hooks" in decision.reason


def test_multihead_attention_out_proj_stays_dense() -> None:
    attention = nn.MultiheadAttention(8, 2)
    decision = paper_policy(attention.out_proj, is_first_conv=False)
    assert decision.method is None and "MultiheadAttention" in decision.reason


def test_weight_norm_parametrization_is_read_as_computed() -> None:
    conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 6, 3, padding=1))
    x = torch.randn(2, 4, 7, 7)
    layer = factorize(conv, "ht2", energy=1.0)
    with torch.no_grad():
        assert rel_error(layer(x), conv(x)) < REL_TOL
    assert layer.spec.derived_weight


def test_plan_from_a_subclass_model_applies_on_the_meta_device() -> None:
    model = Net(DynamicSameConv)
    ht2.compress(model, energy=1.0, keep_if_larger=False)
    plan = collect_plan(model)
    body = next(entry for entry in plan if entry["name"] == "body")
    assert body["layer"]["pad_same"] is True and "derived_weight" not in body["layer"]
    with torch.device("meta"):
        fresh = Net(DynamicSameConv)
    apply_plan(fresh, plan)
    assert isinstance(fresh.body, HT2Conv2d) and fresh.body.spec.pad_same


def test_same_pad_conv_matches_a_strided_same_convolution() -> None:
    conv = SamePadConv2d(3, 4, 3, stride=1)
    reference = nn.Conv2d(3, 4, 3, padding="same")
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(1, 3, 8, 9)
    with torch.no_grad():
        assert torch.allclose(conv(x), reference(x), atol=1e-6)
        assert SamePadConv2d(3, 4, 3, stride=2)(x).shape[-2:] == (4, 5)


def _timm_layers():
    return pytest.importorskip("timm").layers


def _timm_net(kind: str) -> nn.Module:
    layers = _timm_layers()
    convs = {
        "Conv2dSame": lambda c, t, k, s: layers.Conv2dSame(c, t, k, stride=s),
        "StdConv2d": lambda c, t, k, s: layers.StdConv2d(c, t, k, stride=s),
        "StdConv2dSame": lambda c, t, k, s: layers.StdConv2dSame(c, t, k, stride=s),
        "ScaledStdConv2d": lambda c, t, k, s: layers.ScaledStdConv2d(c, t, k, stride=s),
        "ScaledStdConv2dSame": lambda c, t, k, s: layers.ScaledStdConv2dSame(c, t, k, stride=s),
    }
    conv = convs[kind]
    model = nn.Sequential(
        conv(3, 8, 3, 2),
        nn.ReLU(),
        conv(8, 12, 3, 2),
        nn.ReLU(),
        conv(12, 10, 1, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        layers.Linear(10, 5),
    )
    with torch.no_grad():  # gains away from 1, so that scaling is exercised
        for module in model.modules():
            if hasattr(module, "gain"):
                module.gain.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize(
    "kind", ["Conv2dSame", "StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame"]
)
def test_timm_subclasses_are_factorized_exactly(kind: str, tmp_path: Path) -> None:
    sizes = ((15, 17), (16, 16))
    report = _compress_and_round_trip(lambda: _timm_net(kind), tmp_path, sizes)
    assert [layer.method for layer in report.layers] == ["svd", "ht2", "svd", "svd"]
    assert report.layers[1].type == kind


class ReadsItsLayers(nn.Module):
    """Code that reads attributes of its layers besides calling them (as timm's ConViT,
    DaViT, EdgeNeXt and EVA do)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, (3, 2), padding=1)
        self.proj = nn.Linear(6, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.conv.kernel_size
        x = F.pad(x.to(self.conv.weight.dtype), (0, kw - 1, 0, kh - 1))
        x = self.conv(x).mean(dim=(2, 3))
        return F.linear(x, self.proj.weight * self.conv.out_channels)


def test_code_reading_attributes_of_a_replaced_layer_keeps_working() -> None:
    model = ReadsItsLayers()
    x = torch.randn(2, 4, 7, 8)
    with torch.no_grad():
        expected = model(x)
    report = ht2.compress(model, energy=1.0, keep_if_larger=False)
    assert [layer.method for layer in report.layers] == ["svd", "svd"]
    with torch.no_grad():
        assert rel_error(model(x), expected) < REL_TOL


def test_data_aware_fit_keeps_plain_factors_for_a_subclass_it_cannot_model() -> None:
    """The fit's patches assume a plain conv; a weight-standardised one keeps its plain factors
    (with a note), so the result is never worse than plain compression of that layer."""
    from ht2.dataaware import DataAwareOptions, compress_data_aware

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        StandardisedConv(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
    ).eval()
    twin = copy.deepcopy(model)
    images = torch.randn(32, 3, 8, 8)
    report = compress_data_aware(
        model,
        images.split(16),
        energy=0.6,
        calib_images=32,
        options=DataAwareOptions(mode="refit", iterations=5),
        example_input=torch.zeros(1, 3, 8, 8),
        keep_if_larger=False,
    )
    ht2.compress(twin, energy=0.6, example_input=torch.zeros(1, 3, 8, 8), keep_if_larger=False)
    assert "kept the plain factors" in report.data_aware["notes"]["2"]
    fitted, plain = model.get_submodule("2"), twin.get_submodule("2")
    for a, b in zip(fitted.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.isfinite(model(images[:4])).all()


@pytest.mark.parametrize(("conv", "version"), [(nn.Conv2d, 1), (DynamicSameConv, 3)])
def test_a_folder_is_written_in_the_oldest_format_that_holds_it(
    tmp_path: Path, conv: type[nn.Module], version: int
) -> None:
    """Layer flags (pad_same, derived_weight) need format 3, so an older ht2 refuses such a
    folder instead of rebuilding it without its padding; plain folders stay at 1."""
    import json

    _compress_and_round_trip(lambda: Net(conv), tmp_path)
    assert json.loads((tmp_path / "out" / "ht2.json").read_text())["format_version"] == version


class CachingConv(nn.Conv2d):
    """Holds a non-leaf tensor, so it cannot be deep-copied for a probe."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cache = self.weight * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


def test_a_subclass_that_cannot_be_probed_is_left_dense_with_a_reason() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), CachingConv(8, 8, 3)).eval()
    report = ht2.compress(model, energy=0.9, example_input=torch.zeros(1, 3, 12, 12))
    entry = _layer(report, "1")
    assert entry.method == "dense" and "could not be probed" in entry.reason
