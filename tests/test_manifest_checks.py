"""A damaged or edited ht2.json is refused in one line naming the entry, before allocation."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from ht2 import models
from ht2.cli.main import main
from ht2.errors import HT2Error
from ht2.io.artefacts import MANIFEST, load, save
from ht2.io.plan_check import rank_bounds
from ht2.io.rank_file import read_rank_file
from ht2.layers import ConvSpec, LinearSpec
from ht2.planning import compress

HT2_ENTRY = 1  # layer1.0.conv1 of ResNet-20, an HT-2 layer (entry 0 is the first conv, SVD)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = models.create("cifar10_resnet20")
    compress(model, energy=0.8, example_input=torch.zeros(1, 3, 32, 32))
    return save(model, tmp_path_factory.mktemp("saved") / "r20")


def _edited(folder: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    copy = shutil.copytree(folder, tmp_path / "edited")
    manifest = json.loads((copy / MANIFEST).read_text())
    edit(manifest)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return copy


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets manifest[a][b]... for path "a.b...", list indices as numbers."""

    def edit(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return edit


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: manifest["plan"][HT2_ENTRY].pop(key)


DEFECTS = [
    ("missing_ranks", _drop("ranks"), 'plan entry 1 (layer1.0.conv1): "ranks" is missing'),
    ("missing_layer", _drop("layer"), 'plan entry 1 (layer1.0.conv1): "layer" is missing'),
    ("magic_method", _set("plan.1.method", "magic"), "(layer1.0.conv1): method 'magic' is unknown"),
    ("list_method", _set("plan.1.method", ["ht2"]), "method ['ht2'] is unknown"),
    (
        "negative_rank",
        _set("plan.1.ranks.r1", -3),
        "(layer1.0.conv1): ranks.r1 must be a positive integer, got -3",
    ),
    ("float_rank", _set("plan.1.ranks.r3", 2.5), "ranks.r3 must be a positive integer, got 2.5"),
    ("bool_rank", _set("plan.1.ranks.r3", True), "ranks.r3 must be a positive integer, got True"),
    ("wrong_rank_keys", _set("plan.1.ranks", {"r": 4}), "ranks of ht2 must be r1, r13, r3; got r"),
    (
        "string_entry",
        _set("plan.2", "layer1.0.conv2"),
        "plan entry 2: is a string 'layer1.0.conv2'",
    ),
    ("null_entry", _set("plan.2", None), "plan entry 2: is null"),
    ("huge_rank", _set("plan.1.ranks.r13", 100000), "ranks.r13 = 100000 is above its bound"),
    ("huge_r1", _set("plan.1.ranks.r1", 100000), "ranks.r1 = 100000 is above its bound 16"),
    ("path_name", _set("plan.1.name", "../x"), "plan entry 1: name '../x' is not a module path"),
    ("slash_name", _set("plan.1.name", "layer1/0"), "name 'layer1/0' is not a module path"),
    ("empty_part", _set("plan.1.name", "layer1..conv1"), "is not a module path"),
    ("int_name", _set("plan.1.name", 7), "plan entry 1: name must be a string, got int"),
    ("bad_spec", _set("plan.1.layer.kernel_size", [3, -1]), "layer.kernel_size = [3, -1]"),
    ("grouped", _set("plan.1.layer.groups", 2), "layer.groups is 2; factorized convs need 1"),
    ("bad_form", _set("plan.1.form", "sideways"), "(layer1.0.conv1): unknown form 'sideways'"),
    ("bad_energy", _set("plan.1.energy", 7), "energy must be in (0, 1] or null, got 7"),
    ("svd_linear_as_ht2", _set("plan.-1.method", "ht2"), "does not apply to a Linear layer"),
    (
        "num_classes_negative",
        _set("arch.kwargs.num_classes", -5),
        "num_classes: must be a positive",
    ),
    ("num_classes_zero", _set("arch.kwargs.num_classes", 0), "num_classes: must be a positive"),
    ("num_classes_text", _set("arch.kwargs.num_classes", "ten"), "num_classes: must be a positive"),
    ("num_classes_float", _set("arch.kwargs.num_classes", 10.0), "num_classes: must be a positive"),
    ("num_classes_huge", _set("arch.kwargs.num_classes", 10**9), "no tensor of the saved model"),
    ("arch_not_object", _set("arch", "resnet"), '"arch" must be an object or null'),
    ("arch_name", _set("arch.name", "cifar10_resnet21"), "arch: unknown model 'cifar10_resnet21'"),
    ("format_version", _set("format_version", 99), "upgrade ht2"),
    ("format_version_zero", _set("format_version", 0), "format_version 0, not a whole number"),
    ("format_version_text", _set("format_version", "1"), "format_version '1', not a whole number"),
    ("unknown_layer", _set("plan.1.name", "layer9.0.conv1"), "does not have"),
    (
        "wrong_spec",
        _set("plan.1.layer.out_channels", 32),
        "plan entry 1: the plan does not fit the model at 'layer1.0.conv1': Conv2d differs: "
        "out_channels planned 32, found 16",
    ),
    (
        "wrong_kernel",
        _set("plan.1.layer.kernel_size", [1000000, 1000000]),
        "kernel_size planned (1000000, 1000000), found (3, 3)",
    ),
    (
        "names_a_norm",
        _set("plan.1.name", "layer1.0.bn1"),
        "at 'layer1.0.bn1': planned a Conv2d layer, found BatchNorm2d",
    ),
    ("folded_path", _set("folded_bn", [{"bn": "../bn1", "into": "conv1"}]), "not a module path"),
]


@pytest.mark.parametrize(
    ("edit", "message"), [case[1:] for case in DEFECTS], ids=[case[0] for case in DEFECTS]
)
def test_defect_is_one_error_naming_the_entry(folder: Path, tmp_path: Path, edit, message) -> None:
    edited = _edited(folder, tmp_path, edit)
    with pytest.raises(HT2Error) as caught:
        load(edited)
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert text.startswith(str(edited))
    assert "Spec(" not in text  # the differing fields, not whole dataclass reprs


def test_duplicate_entry_is_refused(folder: Path, tmp_path: Path) -> None:
    def duplicate(manifest: dict[str, Any]) -> None:
        manifest["plan"].append(manifest["plan"][HT2_ENTRY])

    with pytest.raises(HT2Error, match=r"\(layer1\.0\.conv1\): named twice"):
        load(_edited(folder, tmp_path, duplicate))


def test_huge_ranks_are_refused_before_any_allocation(folder: Path, tmp_path: Path) -> None:
    def huge(manifest: dict[str, Any]) -> None:
        for entry in manifest["plan"]:
            entry["ranks"] = {key: 100000 for key in entry["ranks"]}

    edited = _edited(folder, tmp_path, huge)
    start = time.perf_counter()
    with pytest.raises(HT2Error, match="above its bound"):
        load(edited)
    assert time.perf_counter() - start < 0.5


def test_huge_num_classes_is_refused_before_the_model_is_built(folder, tmp_path) -> None:
    edited = _edited(folder, tmp_path, _set("arch.kwargs.num_classes", 10**10))
    start = time.perf_counter()
    with pytest.raises(HT2Error, match="num_classes is 10000000000"):
        load(edited)
    assert time.perf_counter() - start < 0.5


def test_an_unedited_folder_still_loads(folder: Path) -> None:
    model = load(folder)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_cli_reports_a_bad_manifest_in_one_line(folder: Path, tmp_path: Path, capsys) -> None:
    edited = _edited(folder, tmp_path, _set("plan.1.ranks.r1", -3))
    code = main(["evaluate", str(edited), "--data", str(tmp_path / "no-such-data")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("ht2: error: ") and "(layer1.0.conv1): ranks.r1" in err


CONV = ConvSpec(16, 32, (3, 5), (1, 1), (1, 2), (1, 1), 1, False, "zeros")


@pytest.mark.parametrize(
    ("method", "ranks", "bounds"),
    [
        ("ht2", {"r1": 4, "r13": 9, "r3": 2}, {"r1": 16, "r3": 32, "r13": 10}),
        ("ht2", {"r1": 16, "r13": 9, "r3": 32}, {"r1": 16, "r3": 32, "r13": 48}),
        ("tucker2", {"r_in": 16, "r_out": 1}, {"r_in": 15, "r_out": 32}),
        ("svd", {"r": 1}, {"r": 32}),
        ("spatial_svd", {"r": 1}, {"r": 48}),
        ("cp", {"r": 1}, {"r": 16 * 3 * 5}),
    ],
)
def test_rank_bounds_are_what_each_decomposition_can_produce(method, ranks, bounds) -> None:
    found = {key: bound for key, (bound, _why) in rank_bounds(method, CONV, ranks).items()}
    assert found == bounds


def test_rank_bound_of_an_svd_linear_layer() -> None:
    assert rank_bounds("svd", LinearSpec(64, 10, True), {"r": 3})["r"][0] == 10


def _ranks_file(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "ranks.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"layer1.0.conv1": {"r1": 100000, "r13": 3, "r3": 3}}, "larger than its dimensions"),
        ({"layer1.0.conv1": {"r1": -1, "r13": 3, "r3": 3}}, "must be a positive integer"),
        ({"layer1.0.conv1": {"r1": "8", "r13": 3, "r3": 3}}, "must be a positive integer"),
        ({"layer9.0.conv1": {"r1": 3, "r13": 3, "r3": 3}}, "which the model does not have"),
        ({"layer1.0.conv1": {"r": 3}}, "needs ranks r1, r13, r3"),
        (
            {"plan": [{"name": "layer1.0.conv1", "method": "magic", "ranks": {"r": 3}}]},
            "method 'magic' is unknown",
        ),
        ({"plan": ["layer1.0.conv1"]}, "needs a name"),
        ({"../x": {"r": 3}}, "'../x' is not a module path"),
    ],
)
def test_cli_ranks_file_defects_are_one_line(tmp_path: Path, capsys, data, message) -> None:
    out = tmp_path / "o"
    ranks = _ranks_file(tmp_path, data)
    args = ["compress", "cifar10_resnet20", "--random-init", "--ranks", ranks, "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_ranks_file_of_a_dense_layer_list_is_read(tmp_path: Path) -> None:
    data = {
        "layers": [
            {"name": "conv1", "method": "dense"},
            {"name": "fc", "method": "svd", "ranks": {"r": 2}},
        ]
    }
    assert read_rank_file(_ranks_file(tmp_path, data)) == {"fc": {"r": 2}}


def test_hyphenated_module_names_are_module_paths() -> None:
    from ht2.io.names import layer_name_problem

    assert layer_name_problem("trunk_output.block1.block1-0.f.a") is None  # torchvision RegNet
    for bad in ("-x", "a.-", "a b", "a/b", "a..b", ""):
        assert layer_name_problem(bad) is not None, bad
