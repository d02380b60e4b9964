"""`ht2 report`: the stored report as the compress table, as Markdown, as JSON; bad folders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import ht2
from ht2.cli.main import main
from ht2.metrics import num_threads


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One CPU thread: on a shared machine two OpenMP threads can stall for whole seconds."""
    with num_threads(1):
        yield


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def compressed(tmp_path: Path, capsys) -> tuple[Path, str]:
    """A folder written by `ht2 compress` and the table that command printed."""
    out = tmp_path / "r20"
    code, stdout, _ = _run(
        ["compress", "cifar10_resnet20", "--random-init", "--energy", "0.7", "--out", str(out)],
        capsys,
    )
    assert code == 0
    return out, stdout


def test_report_prints_the_same_table_as_compress(compressed: tuple[Path, str], capsys) -> None:
    out, table = compressed
    code, stdout, stderr = _run(["report", str(out)], capsys)
    assert code == 0 and stderr == ""
    assert stdout == table
    assert "layer3.2.conv2" in stdout and "rel err" in stdout


def test_report_markdown(compressed: tuple[Path, str], capsys) -> None:
    out, _ = compressed
    code, stdout, _ = _run(["report", str(out), "--markdown"], capsys)
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("| layer") and lines[0].endswith("|")
    assert set(lines[1]) <= {"|", "-", ":"}
    layers = json.loads((out / "report.json").read_text())["layers"]
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + len(layers)
    assert any(line.startswith("| layer1.0.conv1 ") for line in table)


def test_report_json_is_the_stored_file(compressed: tuple[Path, str], capsys) -> None:
    out, _ = compressed
    code, stdout, _ = _run(["report", str(out), "--json"], capsys)
    assert code == 0
    assert json.loads(stdout) == json.loads((out / "report.json").read_text())


def _fails(args: list[str], capsys, needle: str) -> None:
    code, stdout, stderr = _run(args, capsys)
    assert code == 2
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1
    assert stderr.startswith("ht2") and needle in stderr


def test_folder_without_report(tmp_path: Path, capsys) -> None:
    model = ht2.models.create("cifar10_resnet20")
    ht2.compress(model, energy=0.7, example_input=torch.zeros(1, 3, 32, 32))
    ht2.save(model, tmp_path / "bare")
    _fails(["report", str(tmp_path / "bare")], capsys, str(tmp_path / "bare" / "report.json"))


@pytest.mark.parametrize(
    "content",
    [
        '{"model": "cifar10_resnet20", "layers": [',  # truncated
        "[1, 2, 3]",  # not an object
        '{"model": "x"}',  # fields missing
    ],
)
def test_corrupt_report(compressed: tuple[Path, str], content: str, capsys) -> None:
    out, _ = compressed
    (out / "report.json").write_text(content)
    _fails(["report", str(out)], capsys, str(out / "report.json"))
    _fails(["report", str(out), "--json"], capsys, str(out / "report.json"))


def test_report_with_a_bad_layer(compressed: tuple[Path, str], capsys) -> None:
    out, _ = compressed
    data = json.loads((out / "report.json").read_text())
    data["layers"][0]["unknown_field"] = 1
    (out / "report.json").write_text(json.dumps(data))
    _fails(["report", str(out)], capsys, "report.json")


def test_not_a_folder(tmp_path: Path, capsys) -> None:
    _fails(["report", str(tmp_path / "missing")], capsys, "not a folder")


def test_markdown_and_json_exclude_each_other(compressed: tuple[Path, str], capsys) -> None:
    out, _ = compressed
    _fails(["report", str(out), "--markdown", "--json"], capsys, "not allowed")
