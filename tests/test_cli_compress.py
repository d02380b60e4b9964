"""`ht2 compress` end to end in a temp dir, and every bad input: one line, exit 2, no output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ht2
from ht2.cli.main import main
from tests._shared import RESNET_WEIGHTS, shared_file


def test_compress_writes_the_folder_and_prints_the_table(tmp_path: Path, cli) -> None:
    out = tmp_path / "r20"
    code, stdout, _ = cli(
        ["compress", "cifar10_resnet20", "--random-init", "--energy", "0.7", "--out", str(out)]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["ht2.json", "model.safetensors", "report.json"]
    assert "layer1.0.conv1" in stdout and "ht2" in stdout and "fewer" in stdout
    report = json.loads((out / "report.json").read_text())
    for key in ("model", "energy", "params_before", "params_after", "macs_before", "macs_after"):
        assert key in report
    assert report["model"] == "cifar10_resnet20" and report["energy"] == 0.7
    layer = next(item for item in report["layers"] if item["method"] == "ht2")
    assert set(layer["ranks"]) == {"r1", "r13", "r3"}
    assert {
        "name",
        "params_before",
        "params_after",
        "macs_before",
        "macs_after",
        "rel_error",
        "reason",
    } <= set(layer)
    model = ht2.load(out)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_json_flag_prints_the_report(tmp_path: Path, cli) -> None:
    code, stdout, _ = cli(
        ["compress", "cifar10_resnet20", "--random-init", "--json", "--out", str(tmp_path / "o")]
    )
    assert code == 0
    assert json.loads(stdout) == json.loads((tmp_path / "o" / "report.json").read_text())


def test_include_exclude_and_no_keep_if_larger_reach_the_library(tmp_path: Path, cli) -> None:
    args = [
        "compress",
        "cifar10_resnet20",
        "--random-init",
        "--energy",
        "1",
        "--json",
        "--include",
        "layer1.*",
        "--exclude",
        "layer1.0.*",
        "--no-keep-if-larger",
        "--out",
        str(tmp_path / "o"),
    ]
    code, stdout, _ = cli(args)
    assert code == 0
    methods = {layer["name"]: layer["method"] for layer in json.loads(stdout)["layers"]}
    assert methods["layer1.1.conv1"] == "ht2"
    assert methods["layer1.0.conv1"] == "dense" and methods["conv1"] == "dense"


def test_shared_weights_compress_to_the_reference_size(tmp_path: Path, cli) -> None:
    weights = shared_file(RESNET_WEIGHTS["cifar10_resnet20"])
    code, stdout, _ = cli(
        [
            "compress",
            "cifar10_resnet20",
            "--weights",
            str(weights),
            "--energy",
            "0.9",
            "--no-keep-if-larger",
            "--json",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0
    report = json.loads(stdout)
    assert (report["params_after"], report["macs_after"]) == (175885, 25544080)


def _assert_one_line_error(code: int, err: str, pattern: str, out: Path) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.parametrize("energy", ["0", "1.5", "-0.2", "abc"])
def test_energy_outside_range(tmp_path: Path, cli, energy: str) -> None:
    out = tmp_path / "o"
    code, _, err = cli(
        ["compress", "cifar10_resnet20", "--random-init", "--energy", energy, "--out", str(out)]
    )
    _assert_one_line_error(code, err, "energy must be in (0, 1]", out)


def test_unknown_model_suggests_close_names(tmp_path: Path, cli) -> None:
    out = tmp_path / "o"
    code, _, err = cli(["compress", "resnt20", "--random-init", "--out", str(out)])
    _assert_one_line_error(code, err, "did you mean: cifar10_resnet20", out)


def test_missing_weights_file(tmp_path: Path, cli) -> None:
    out = tmp_path / "o"
    code, _, err = cli(
        ["compress", "cifar10_resnet20", "--weights", str(tmp_path / "no.pth"), "--out", str(out)]
    )
    _assert_one_line_error(code, err, "does not exist", out)


def test_file_that_is_not_a_state_dict(tmp_path: Path, cli) -> None:
    bad = tmp_path / "list.pth"
    torch.save([1, 2, 3], bad)
    out = tmp_path / "o"
    code, _, err = cli(["compress", "cifar10_resnet20", "--weights", str(bad), "--out", str(out)])
    _assert_one_line_error(code, err, "holds no state dict", out)


def test_weights_of_another_architecture_list_the_keys(tmp_path: Path, cli) -> None:
    wrong = tmp_path / "r32.pth"
    torch.save(ht2.models.create("cifar10_resnet32").state_dict(), wrong)
    out = tmp_path / "o"
    code, _, err = cli(["compress", "cifar10_resnet20", "--weights", str(wrong), "--out", str(out)])
    _assert_one_line_error(code, err, "unexpected keys layer1.3.", out)


class Payload:
    """Any class outside torch: weights_only refuses to unpickle it."""


def test_pickle_refused_by_weights_only(tmp_path: Path, cli) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, evil)
    out = tmp_path / "o"
    code, _, err = cli(["compress", "cifar10_resnet20", "--weights", str(evil), "--out", str(out)])
    _assert_one_line_error(code, err, "weights_only", out)


def test_non_empty_output_needs_force(tmp_path: Path, cli) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "ht2.json").write_text('{"format": "ht2"}')  # an ht2 folder: --force may replace it
    args = ["compress", "cifar10_resnet20", "--random-init", "--out", str(out)]
    code, _, err = cli(args)
    assert code == 2 and "use --force" in err and len(err.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    code, _, _ = cli([*args, "--force"])
    assert code == 0 and not (out / "keep.txt").exists() and (out / "ht2.json").exists()


def test_interrupt_leaves_no_partial_folder(tmp_path: Path, cli, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ht2.io.artefacts.write_model", interrupted)
    code, _, err = cli(
        ["compress", "cifar10_resnet20", "--random-init", "--out", str(tmp_path / "o")]
    )
    assert code == 130 and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


def test_help_teaches_with_defaults_and_examples(capsys) -> None:
    assert main(["compress", "--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: 0.9)" in text and "examples:" in text and "--no-keep-if-larger" in text


def test_calibrate_needs_data(tmp_path: Path, cli) -> None:
    out = tmp_path / "o"
    code, _, err = cli(
        ["compress", "cifar10_resnet20", "--random-init", "--calibrate", "--out", str(out)]
    )
    _assert_one_line_error(code, err, "--calibrate needs --data", out)


def test_calibrate_right_after_compression_changes_bn_statistics(tmp_path: Path, cli) -> None:
    from tests._shared import write_image_tree

    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=2)
    plain, calibrated = tmp_path / "plain", tmp_path / "cal"
    base = ["compress", "cifar10_resnet20", "--random-init", "--energy", "0.7"]
    assert cli([*base, "--out", str(plain)])[0] == 0
    assert cli([*base, "--calibrate", "--data", str(data), "--out", str(calibrated)])[0] == 0
    a = ht2.load(plain).bn1.running_mean
    b = ht2.load(calibrated).bn1.running_mean
    assert not torch.equal(a, b)


def test_models_lists_names_with_a_filter(capsys) -> None:
    assert main(["models", "cifar10_*"]) == 0
    names = capsys.readouterr().out.split()
    assert "cifar10_resnet20" in names and "cifar10_densenet40" in names
    assert all(name.startswith("cifar10_") for name in names)
