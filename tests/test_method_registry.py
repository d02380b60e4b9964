"""A decomposition method is one module plus one registry line: a toy method, registered in
this file only, is planned, applied, saved, checked and loaded like the built-in ones."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

import ht2
from ht2.cli.main import main
from ht2.decomp import svd_unfoldings
from ht2.errors import HT2Error
from ht2.io.artefacts import MANIFEST
from ht2.layers import (
    ConvSpec,
    MethodSpec,
    SVDConv2d,
    kxk_methods,
    method_names,
    register_method,
    unregister_method,
)
from ht2.surgery.targets import Target

EXAMPLE = torch.zeros(1, 3, 32, 32)


# The toy method's module: its layer class (Tucker-1's structure under its own name) and spec.
class ToyConv2d(SVDConv2d):
    """The toy method's layer."""

    method = "toy"


def _clip(ranks: Mapping[str, int], shape: Sequence[int]) -> dict[str, int]:
    return {"r": min(max(1, int(ranks["r"])), shape[0], math.prod(shape[1:]))}


def _bounds(spec: ConvSpec, ranks: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    return {"r": (spec.out_channels, f"toy: at most T={spec.out_channels}")}


TOY = MethodSpec(
    title="toy",
    layers={"Conv2d": ToyConv2d},
    rank_keys=("r",),
    clip=_clip,
    bounds=_bounds,
    unfoldings=svd_unfoldings,
)


@pytest.fixture
def toy() -> Iterator[None]:
    register_method("toy", TOY, kxk="toy-svd")  # the one registry line
    yield
    unregister_method("toy")


def _resnet20() -> nn.Module:
    torch.manual_seed(0)
    return ht2.models.create("cifar10_resnet20").eval()


def _toy_layers(model: nn.Module) -> dict[str, ToyConv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ToyConv2d)}


def test_compress_with_a_registered_method_gives_its_layers_and_factors(toy) -> None:
    model = _resnet20()
    dense = copy.deepcopy(model)
    report = ht2.compress(model, energy=0.7, method="toy-svd", example_input=EXAMPLE)
    layers = _toy_layers(model)
    assert report.method == "toy-svd" and len(layers) == 18  # every 3x3 conv but the first
    assert {layer.name for layer in report.layers if layer.method == "toy"} == set(layers)
    for name, layer in layers.items():
        expected = SVDConv2d.from_dense(dense.get_submodule(name), energy=0.7)
        assert layer.ranks == expected.ranks
        torch.testing.assert_close(layer.dense_weight(), expected.dense_weight())


def test_plan_apply_save_and_load_with_a_registered_method(toy, tmp_path: Path) -> None:
    model = _resnet20()
    plan = ht2.plan(model, EXAMPLE, method="toy-svd", target=Target("params", 2.0))
    assert sum(layer.method == "toy" for layer in plan.layers) == 18
    report = ht2.apply(model, ht2.Plan.from_json(plan.to_json()), example_input=EXAMPLE)
    assert report.param_reduction == pytest.approx(2.0, rel=0.05)
    folder = ht2.save(model, tmp_path / "toy", report)
    loaded = ht2.load(folder)
    assert _toy_layers(loaded).keys() == _toy_layers(model).keys()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_a_saved_plan_is_checked_against_the_registered_bounds(toy, tmp_path: Path) -> None:
    model = _resnet20()
    ht2.compress(model, energy=0.7, method="toy-svd", example_input=EXAMPLE)
    folder = ht2.save(model, tmp_path / "toy")
    manifest = json.loads((folder / MANIFEST).read_text())
    index = next(i for i, e in enumerate(manifest["plan"]) if e["method"] == "toy")
    manifest["plan"][index]["ranks"] = {"r": 99}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(HT2Error, match=r"ranks.r = 99 is above its bound 16 \(toy: at most T=16\)"):
        ht2.load(folder)


def test_the_command_line_compresses_with_a_registered_method(toy, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["compress", "cifar10_resnet20", "--random-init", "--method", "toy-svd"]
    assert main([*args, "--energy", "0.7", "--out", str(out)]) == 0
    assert len(_toy_layers(ht2.load(out))) == 18


def test_an_unregistered_method_is_unknown_again(toy) -> None:
    assert "toy" in method_names() and "toy-svd" in kxk_methods()
    unregister_method("toy")
    assert "toy" not in method_names() and "toy-svd" not in kxk_methods()
    with pytest.raises(HT2Error, match="unknown method 'toy-svd'; choose one of ht2, tucker2"):
        ht2.compress(_resnet20(), method="toy-svd")


def test_a_method_name_is_registered_once(toy) -> None:
    with pytest.raises(ValueError, match="a method named 'toy' is registered already"):
        register_method("toy", TOY)
    with pytest.raises(ValueError, match="the k x k method name 'ht2' is taken by 'ht2'"):
        register_method("toy2", TOY, kxk="ht2")


def test_a_fit_error_method_may_not_replace_linear_layers() -> None:
    def fit_spec(layers: Mapping[str, type[SVDConv2d]]) -> MethodSpec:
        return MethodSpec(
            title="toy",
            layers=layers,
            rank_keys=("r",),
            clip=_clip,
            bounds=_bounds,
            fit_error=lambda weight, rank: 0.0,
            max_rank=lambda shape: 1,
        )

    assert fit_spec({"Conv2d": ToyConv2d}).unfoldings is None
    with pytest.raises(
        ValueError,
        match=r"toy: a method whose rank comes from its fit error "
        r"\(no unfoldings\) replaces Conv2d layers only",
    ):
        fit_spec({"Conv2d": ToyConv2d, "Linear": ToyConv2d})
