"""Inputs built to slip past a schema check: weights of the wrong kind, an archive whose
members clash, a data folder with link loops, a plan whose provenance lies, a ranks file with
non-string names. Each gets one HT2Error naming the problem (or is read correctly)."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
import torch

import ht2
from ht2.data.archive import extract_to
from ht2.data.image_files import scan_split
from ht2.errors import HT2Error
from ht2.io.plan_file import read_plan
from ht2.io.rank_file import read_rank_file
from ht2.models import load_weights
from tests._shared import write_image_tree


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return ht2.models.create("cifar10_resnet20").state_dict()


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda t: t.to_sparse(), "as a sparse_coo tensor"),
        (lambda t: torch.empty(t.shape, device="meta"), "as a meta tensor"),
        (lambda t: t.round().long(), "as int64, where the model has floating-point numbers"),
        (lambda t: t.to(torch.complex64), "as complex64"),
    ],
    ids=["sparse", "meta", "int64", "complex"],
)
def test_weights_of_the_wrong_kind_are_refused(
    state: dict[str, torch.Tensor], tmp_path: Path, change, needle: str
) -> None:
    """load_state_dict would cast an int or complex tensor silently, and the NaN check could not
    read a sparse or meta one."""
    edited = {**state, "conv1.weight": change(state["conv1.weight"])}
    torch.save(edited, tmp_path / "w.pth")
    model = ht2.models.create("cifar10_resnet20")
    with pytest.raises(HT2Error, match=f"'conv1.weight' {needle}"):
        load_weights(model, tmp_path / "w.pth")


def test_half_precision_weights_still_load(state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    torch.save(
        {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, tmp_path / "w.pth"
    )
    model = ht2.models.create("cifar10_resnet20")
    load_weights(model, tmp_path / "w.pth")
    assert torch.equal(model.conv1.weight, state["conv1.weight"].half().float())


def test_archive_members_that_clash_are_refused(tmp_path: Path) -> None:
    """A file at ds/train/c0 and then a member inside ds/train/c0/: the file system refuses,
    and that is one line, not a NotADirectoryError traceback."""
    (tmp_path / "c0").write_bytes(b"not a folder")
    (tmp_path / "img.jpg").write_bytes(b"x")
    archive = tmp_path / "clash.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "c0", arcname="ds/train/c0")
        tar.add(tmp_path / "img.jpg", arcname="ds/train/c0/0.jpg")
    with pytest.raises(HT2Error, match=r"cannot extract .*clash\.tar\.gz .*Not a directory"):
        extract_to(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_link_loops_in_a_data_folder_neither_hang_nor_count_twice(tmp_path: Path) -> None:
    root = write_image_tree(tmp_path / "data", classes=("a", "b"), per_class=2)
    plain = scan_split(root / "test")
    os.symlink(".", root / "test" / "a" / "again")
    os.symlink("..", root / "test" / "a" / "up")
    linked = root / "elsewhere"
    os.rename(root / "test" / "b", linked)
    os.symlink(linked, root / "test" / "b")  # a class folder that is a link is still read
    classes, samples = scan_split(root / "test")
    assert classes == plain[0]
    assert [label for _, label in samples] == [label for _, label in plain[1]]


@pytest.mark.parametrize(
    "target",
    [
        {"kind": "params", "factor": "x"},
        {"kind": "params", "factor": 3, "reached": 2.5, "met": False, "energy": 0.5},
    ],
    ids=["factor-text", "missed-without-note"],
)
def test_a_plan_whose_target_is_not_a_target_is_refused(tmp_path: Path, target) -> None:
    model = ht2.models.create("cifar10_resnet20")
    plan = ht2.plan(model, energy=0.8)
    data = json.loads(plan.to_json())
    data["provenance"]["target"] = target
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(HT2Error, match=r"provenance\.target = .* is not valid"):
        read_plan(tmp_path / "plan.json")


@pytest.mark.parametrize("name", [{"a": 1}, ["conv1"], 7])
def test_a_ranks_list_with_a_name_that_is_not_a_string_is_refused(tmp_path: Path, name) -> None:
    layers = [{"name": name, "method": "ht2", "ranks": {"r1": 2, "r13": 2, "r3": 2}}]
    (tmp_path / "ranks.json").write_text(json.dumps({"layers": layers}))
    with pytest.raises(HT2Error, match="layer name must be a string"):
        read_rank_file(tmp_path / "ranks.json")


def test_a_plan_from_an_allocation_planner_reads_back_and_applies(tmp_path: Path, cli) -> None:
    """The spectrum planner records its target as asked (kind and factor): that is a target."""
    from ht2.io.plan_file import write_plan
    from ht2.planning import CompressOptions, plan_with
    from ht2.surgery.targets import Target

    model = ht2.models.create("cifar10_resnet20")
    options = CompressOptions(target=Target("params", 2.0))
    plan = plan_with("spectrum", model, torch.randn(1, 3, 32, 32), options)
    assert plan.provenance["target"] == {"kind": "params", "factor": 2.0}
    write_plan(plan, tmp_path / "plan.json")
    assert read_plan(tmp_path / "plan.json").provenance["target"] == plan.provenance["target"]
    args = ["compress", "cifar10_resnet20", "--random-init", "--plan", str(tmp_path / "plan.json")]
    code, stdout, stderr = cli([*args, "--out", str(tmp_path / "out")])
    assert code == 0, stderr
    assert "target 2x fewer params" in stdout + stderr
