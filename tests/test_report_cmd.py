"""`ht2 report`: the stored report as the compress table, as Markdown, as JSON; bad folders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import ht2
from ht2.metrics import num_threads


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One CPU thread: on a shared machine two OpenMP threads can stall for whole seconds."""
    with num_threads(1):
        yield


@pytest.fixture
def compressed(tmp_path: Path, cli) -> tuple[Path, str]:
    """A folder written by `ht2 compress` and the table that command printed."""
    out = tmp_path / "r20"
    code, stdout, _ = cli(
        ["compress", "cifar10_resnet20", "--random-init", "--energy", "0.7", "--out", str(out)]
    )
    assert code == 0
    return out, stdout


def test_report_prints_the_same_table_as_compress(compressed: tuple[Path, str], cli) -> None:
    out, table = compressed
    code, stdout, stderr = cli(["report", str(out)])
    assert code == 0 and stderr == ""
    assert stdout == table
    assert "layer3.2.conv2" in stdout and "rel err" in stdout


def test_report_markdown(compressed: tuple[Path, str], cli) -> None:
    out, _ = compressed
    code, stdout, _ = cli(["report", str(out), "--markdown"])
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("| layer") and lines[0].endswith("|")
    assert set(lines[1]) <= {"|", "-", ":"}
    layers = json.loads((out / "report.json").read_text())["layers"]
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(layers)
    assert any(line.startswith("| layer1.0.conv1 ") for line in table)


def test_report_json_is_the_stored_file(compressed: tuple[Path, str], cli) -> None:
    out, _ = compressed
    code, stdout, _ = cli(["report", str(out), "--json"])
    assert code == 0
    assert json.loads(stdout) == json.loads((out / "report.json").read_text())


def _fails(args: list[str], cli, needle: str) -> None:
    code, stdout, stderr = cli(args)
    assert code == 2
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1
    assert stderr.startswith("ht2") and needle in stderr


def test_folder_without_report(tmp_path: Path, cli) -> None:
    model = ht2.models.create("cifar10_resnet20")
    ht2.compress(model, energy=0.7, example_input=torch.zeros(1, 3, 32, 32))
    ht2.save(model, tmp_path / "bare")
    _fails(["report", str(tmp_path / "bare")], cli, str(tmp_path / "bare" / "report.json"))


@pytest.mark.parametrize(
    "content",
    [
        '{"model": "cifar10_resnet20", "layers": [',  # truncated
        "[1, 2, 3]",  # not an object
        '{"model": "x"}',  # fields missing
    ],
)
def test_corrupt_report(compressed: tuple[Path, str], content: str, cli) -> None:
    out, _ = compressed
    (out / "report.json").write_text(content)
    _fails(["report", str(out)], cli, str(out / "report.json"))
    _fails(["report", str(out), "--json"], cli, str(out / "report.json"))


def test_report_with_a_bad_layer(compressed: tuple[Path, str], cli) -> None:
    out, _ = compressed
    data = json.loads((out / "report.json").read_text())
    data["layers"][0]["unknown_field"] = 1
    (out / "report.json").write_text(json.dumps(data))
    _fails(["report", str(out)], cli, "report.json")


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda data: data.pop("format"), "not an ht2 manifest"),
        (lambda data: data.update(format_version=99), "format_version 99"),
        (lambda data: data["plan"][0].update(name="conv1..weight"), "not a module path"),
        (lambda data: data["plan"][0].update(method="eval"), "method 'eval' is unknown"),
        (lambda data: data["plan"][1].update(name="__class__"), "does not have"),
        (lambda data: data["plan"][1]["layer"].update(out_channels=32), "out_channels planned 32"),
        (lambda data: data["arch"]["kwargs"].update(num_classes=100), "no tensor of the saved"),
        (lambda data: data.update(plan=[]), "model.safetensors does not fit the model: missing"),
        (
            lambda data: data.update(folded_bn=[{"bn": "nope", "into": "conv1"}], format_version=2),
            "ht2.json: the folded pairs name 'nope'",
        ),
    ],
)
def test_report_of_a_folder_whose_manifest_is_damaged(
    compressed: tuple[Path, str], damage, needle: str, cli
) -> None:
    """The report is intact but the folder no longer loads: say so, as `ht2 evaluate` would."""
    out, _ = compressed
    data = json.loads((out / "ht2.json").read_text())
    damage(data)
    (out / "ht2.json").write_text(json.dumps(data))
    _fails(["report", str(out)], cli, needle)
    _fails(["report", str(out), "--json"], cli, needle)


def test_report_of_a_model_that_cannot_be_built_on_the_meta_device(
    compressed: tuple[Path, str], cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchvision's RegNets read a tensor while they initialize, which fails on the meta
    device; the folder check then builds the architecture for real instead of refusing it."""
    from ht2.io import artefacts

    build = artefacts._create
    devices = []

    def no_meta(arch, where):
        devices.append(torch.empty(0).device.type)
        if devices[-1] == "meta":
            raise ht2.HT2Error("cannot build: Cannot copy out of meta tensor; no data!")
        return build(arch, where)

    monkeypatch.setattr(artefacts, "_create", no_meta)
    out, table = compressed
    code, stdout, stderr = cli(["report", str(out)])
    assert (code, stderr) == (0, "")
    assert stdout.splitlines()[0] == table.splitlines()[0]
    assert devices == ["meta", "cpu"]


def test_a_damaged_plan_is_refused_after_one_build_on_the_meta_device(
    compressed: tuple[Path, str], cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a builder that fails on meta gets a second, real build: a plan error does not."""
    from ht2.io import artefacts

    build = artefacts._create
    devices = []

    def spy(arch, where):
        devices.append(torch.empty(0).device.type)
        return build(arch, where)

    monkeypatch.setattr(artefacts, "_create", spy)
    out, _ = compressed
    data = json.loads((out / "ht2.json").read_text())
    data["plan"][1]["layer"].update(out_channels=32)
    (out / "ht2.json").write_text(json.dumps(data))
    _fails(["report", str(out)], cli, "out_channels planned 32")
    assert devices == ["meta"]


def test_not_a_folder(tmp_path: Path, cli) -> None:
    _fails(["report", str(tmp_path / "missing")], cli, "not a folder")


def test_markdown_and_json_exclude_each_other(compressed: tuple[Path, str], cli) -> None:
    out, _ = compressed
    _fails(["report", str(out), "--markdown", "--json"], cli, "not allowed")
