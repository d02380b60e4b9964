"""Rival decompositions (Tucker-2, spatial SVD, CP): exact where they should be, replayable."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import ht2
from ht2 import models
from ht2.cli.main import main
from ht2.decomp import (
    Tucker2Ranks,
    cp_decompose,
    cp_reconstruct,
    spatial_svd,
    tucker2_decompose,
    tucker2_reconstruct,
)
from ht2.layers import (
    CPConv2d,
    SpatialSVDConv2d,
    Tucker2Conv2d,
    build_factorized,
    factorize,
)
from ht2.metrics.latency import num_threads
from ht2.surgery import METHODS, paper_policy
from tests._shared import CONV_GEOMETRIES, PADDING_MODES, grid_conv, rel_error

GRID = list(itertools.product(CONV_GEOMETRIES, PADDING_MODES, [True, False]))


def _cp_kernel(shape: tuple[int, int, int, int], rank: int) -> torch.Tensor:
    factors = [torch.randn(n, rank, dtype=torch.float64) for n in shape]
    return torch.einsum("tr,cr,hr,wr->tchw", *factors)


def _tucker2_kernel(t: int, c: int, d1: int, d2: int, ranks: Tucker2Ranks) -> torch.Tensor:
    u_out = torch.randn(t, ranks.r_out, dtype=torch.float64)
    core = torch.randn(ranks.r_out, ranks.r_in, d1, d2, dtype=torch.float64)
    u_in = torch.randn(c, ranks.r_in, dtype=torch.float64)
    return torch.einsum("to,oihw,ci->tchw", u_out, core, u_in)


# --- the math -------------------------------------------------------------------------------


def test_tucker2_recovers_a_kernel_built_from_known_factors() -> None:
    true = Tucker2Ranks(r_in=4, r_out=3)
    kernel = _tucker2_kernel(10, 8, 3, 5, true)
    assert tucker2_decompose(kernel, energy=0.999999).ranks == true
    factors = tucker2_decompose(kernel, ranks=true)
    assert factors.rel_error < 1e-5
    assert rel_error(tucker2_reconstruct(factors), kernel) < 1e-5


def test_tucker2_error_is_true_and_hooi_never_raises_it() -> None:
    kernel = torch.randn(12, 10, 3, 3, dtype=torch.float64)
    ranks = Tucker2Ranks(r_in=4, r_out=5)
    hosvd = tucker2_decompose(kernel, ranks=ranks)
    assert hosvd.rel_error == pytest.approx(rel_error(tucker2_reconstruct(hosvd), kernel), rel=1e-9)
    refined = tucker2_decompose(kernel, ranks=ranks, hooi_sweeps=3)
    assert refined.rel_error <= hosvd.rel_error + 1e-12
    assert refined.u_in.shape == (10, 4) and refined.core.shape == (5, 4, 3, 3)


def test_tucker2_factor_dtype_follows_the_kernel_and_ranks_are_clipped() -> None:
    factors = tucker2_decompose(torch.randn(4, 3, 3, 3), ranks=Tucker2Ranks(50, 50))
    assert factors.ranks == Tucker2Ranks(r_in=3, r_out=4)
    assert all(f.dtype == torch.float32 for f in (factors.u_in, factors.core, factors.u_out))


def test_spatial_svd_is_the_best_rank_r_split_of_its_matrix() -> None:
    kernel = torch.randn(7, 6, 3, 5, dtype=torch.float64)
    factors = spatial_svd(kernel, rank=4)
    assert factors.first.shape == (4, 6, 3, 1) and factors.second.shape == (7, 4, 1, 5)
    s = torch.linalg.svdvals(kernel.permute(1, 2, 0, 3).reshape(18, 35))
    best = float(s[4:].square().sum().sqrt() / s.square().sum().sqrt())
    rebuilt = torch.einsum("trw,rch->tchw", factors.second[:, :, 0], factors.first[..., 0])
    assert rel_error(rebuilt, kernel) == pytest.approx(best, rel=1e-9)
    assert factors.rel_error == pytest.approx(best, rel=1e-9)


def test_cp_recovers_a_kernel_built_from_known_rank_3_factors() -> None:
    kernel = _cp_kernel((9, 8, 3, 3), 3)
    factors = cp_decompose(kernel, rank=3)
    assert factors.rel_error < 1e-4
    assert rel_error(cp_reconstruct(factors), kernel) < 1e-4


def test_cp_energy_rank_is_the_smallest_that_fits() -> None:
    kernel = _cp_kernel((9, 8, 3, 3), 3)
    factors = cp_decompose(kernel, energy=0.9999)
    assert factors.rank == 3 and factors.rel_error**2 <= 1e-4
    noisy = torch.randn(8, 6, 3, 3)
    loose = cp_decompose(noisy, energy=0.6)
    assert loose.rel_error**2 <= 0.4 + 1e-3 and loose.u_out.dtype == torch.float32


def test_exactly_one_of_energy_or_rank_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        tucker2_decompose(torch.randn(3, 3, 3, 3))
    with pytest.raises(ValueError, match="exactly one"):
        cp_decompose(torch.randn(3, 3, 3, 3), energy=0.9, rank=2)


# --- the modules ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["tucker2", "spatial_svd"])
@pytest.mark.parametrize(("geometry", "mode", "bias"), GRID)
def test_full_rank_rival_conv_equals_dense(method, geometry, mode, bias) -> None:
    conv = grid_conv(geometry, mode, bias)
    x = torch.randn(2, 6, 13, 14)
    layer = factorize(conv, method, energy=1.0)
    expected = conv(x)
    actual = layer(x)
    assert actual.shape == expected.shape
    assert rel_error(actual, expected) < 1e-5


@pytest.mark.parametrize(("geometry", "mode", "bias"), GRID)
def test_cp_conv_of_an_exact_rank_3_kernel_equals_dense(geometry, mode, bias) -> None:
    conv = grid_conv(geometry, mode, bias)
    with torch.no_grad():
        conv.weight.copy_(_cp_kernel(tuple(conv.weight.shape), 3))
    x = torch.randn(2, 6, 13, 14)
    layer = factorize(conv, "cp", ranks={"r": 3})
    assert layer.ranks == {"r": 3}
    assert rel_error(layer(x), conv(x)) < 1e-4


def test_module_structures_follow_the_papers() -> None:
    conv = nn.Conv2d(8, 10, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    tucker = Tucker2Conv2d.from_dense(conv, ranks=Tucker2Ranks(r_in=3, r_out=4))
    assert tucker.reduce.weight.shape == (3, 8, 1, 1)
    assert tucker.core.weight.shape == (4, 3, 3, 5) and tucker.core.stride == (2, 1)
    assert tucker.expand.weight.shape == (10, 4, 1, 1) and tucker.ranks == {"r_in": 3, "r_out": 4}
    spatial = SpatialSVDConv2d.from_dense(conv, rank=6)
    assert spatial.vertical.weight.shape == (6, 8, 3, 1) and spatial.vertical.stride == (2, 1)
    assert spatial.expand.weight.shape == (10, 6, 1, 5) and spatial.expand.padding == (0, 2)
    assert spatial.expand.dilation == (1, 2) and spatial.expand.bias is not None
    cp = CPConv2d.from_dense(conv, rank=5)
    assert cp.vertical.groups == 5 and cp.vertical.weight.shape == (5, 1, 3, 1)
    assert cp.horizontal.groups == 5 and cp.horizontal.weight.shape == (5, 1, 1, 5)
    assert sum(p.numel() for p in cp.parameters()) == 5 * (8 + 3 + 5 + 10) + 10


@pytest.mark.parametrize("method", ["tucker2", "spatial_svd", "cp"])
def test_rival_to_dense_and_plan_entry_rebuild_the_layer(method: str) -> None:
    conv = nn.Conv2d(6, 8, 3, stride=2, padding="valid", padding_mode="reflect")
    layer = factorize(conv, method, energy=0.7)
    dense = layer.to_dense()
    x = torch.randn(1, 6, 9, 9)
    assert rel_error(dense(x), layer(x)) < 1e-5
    rebuilt = build_factorized(json.loads(json.dumps(layer.plan_entry())))
    assert type(rebuilt) is type(layer) and rebuilt.ranks == layer.ranks
    assert rebuilt.plan_entry()["method"] == method
    rebuilt.load_state_dict(layer.state_dict())
    assert torch.equal(rebuilt(x), layer(x))


# --- policy, surgery, artefacts, CLI --------------------------------------------------------


def test_policy_maps_methods_to_kxk_handlers_only() -> None:
    assert METHODS == ("ht2", "tucker2", "cp", "spatial-svd")
    kxk, pointwise, linear = nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1), nn.Linear(3, 3)
    expected = {"ht2": "ht2", "tucker2": "tucker2", "cp": "cp", "spatial-svd": "spatial_svd"}
    for method, handler in expected.items():
        assert paper_policy(kxk, False, method).method == handler
        assert paper_policy(kxk, True, method).method == "svd"
        assert paper_policy(pointwise, False, method).method == "svd"
        assert paper_policy(linear, False, method).method == "svd"
    with pytest.raises(ValueError, match="unknown method"):
        paper_policy(kxk, False, "magic")


HANDLER_TYPES = {
    "ht2": "HT2Conv2d",
    "tucker2": "Tucker2Conv2d",
    "cp": "CPConv2d",
    "spatial-svd": "SpatialSVDConv2d",
}


@pytest.mark.parametrize(
    "method",
    # CP's rank search takes most of a minute on ResNet-20: in the slow set
    [pytest.param(m, marks=pytest.mark.slow) if m == "cp" else m for m in METHODS],
)
def test_resnet20_round_trip_is_bit_exact_for_each_method(method: str, tmp_path: Path) -> None:
    model = models.create("cifar10_resnet20")
    with num_threads(1):  # CP's rank search: many tiny products, faster on one thread
        report = ht2.compress(
            model, energy=0.6, method=method, example_input=torch.zeros(1, 3, 32, 32)
        )
    kxk = [layer for layer in report.replaced if layer.name != "conv1"]
    assert kxk and type(model.get_submodule(kxk[0].name)).__name__ == HANDLER_TYPES[method]
    assert model.get_submodule("conv1").method == "svd"
    ht2.save(model, tmp_path / "out", report)
    loaded = ht2.load(tmp_path / "out")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    for layer in report.replaced:
        assert type(loaded.get_submodule(layer.name)) is type(model.get_submodule(layer.name))
        assert loaded.get_submodule(layer.name).ranks == layer.ranks


@pytest.mark.parametrize(
    ("method", "energy", "handler", "ranks"),
    [
        ("tucker2", "0.9", "tucker2", {"r_in", "r_out"}),
        ("spatial-svd", "0.5", "spatial_svd", {"r"}),
    ],
)
def test_cli_method_names_the_kxk_decomposition(
    method, energy, handler, ranks, tmp_path, capsys
) -> None:
    out = tmp_path / "o"
    code = main(
        ["compress", "cifar10_resnet20", "--random-init", "--method", method, "--json"]
        + ["--energy", energy, "--out", str(out)]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert layers["layer1.1.conv1"]["method"] == handler
    assert set(layers["layer1.1.conv1"]["ranks"]) == ranks
    rival = [layer for layer in report["layers"] if layer["method"] == handler]
    assert rival and all(set(layer["ranks"]) == ranks for layer in rival)
    assert layers["conv1"]["method"] in ("svd", "dense")
    assert {e["method"] for e in json.loads((out / "ht2.json").read_text())["plan"]} <= {
        handler,
        "svd",
    }
