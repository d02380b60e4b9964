"""`ht2 compare`: a row per (target, method), targets reached, the three files, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ht2 import models
from ht2.cli.main import main
from ht2.experiments.compare import (
    CompareResult,
    compare_markdown,
    run_compare,
    uniform_allocation,
    weight_error,
)
from ht2.surgery import CompressionReport, LayerReport
from ht2.surgery.targets import Target
from tests._shared import write_image_tree

TEN = tuple("abcdefghij")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_image_tree(tmp_path / "data", classes=TEN, per_class=2)


def _compare(data: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "compare",
            "cifar10_resnet20",
            "--random-init",
            "--data",
            str(data),
            "--eval-images",
            "10",
            "--calib-images",
            "10",
            "--workers",
            "0",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_compare_writes_a_row_per_target_and_method(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    code = _compare(
        tiny, out, "--target-params", "2,4x", "--methods", "ht2,tucker2,svd", "--no-latency"
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.md", "pareto.png"]
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "compare.json").read_text())
    rows = result["rows"]
    assert [(r["target_factor"], r["method"]) for r in rows] == [
        (2.0, "ht2"),
        (2.0, "tucker2"),
        (2.0, "svd"),
        (4.0, "ht2"),
        (4.0, "tucker2"),
        (4.0, "svd"),
    ]
    for row in rows:
        assert row["allocation"] == "uniform" and row["target_kind"] == "params"
        assert row["met"] is True
        assert abs(row["param_reduction"] / row["target_factor"] - 1) <= 0.02
        assert 0.0 < row["weight_error"] < 1.0
        assert 0.0 <= row["top1"] <= 100.0 and 0.0 <= row["top1_calibrated"] <= 100.0
        assert row["speedup"] == {} and row["params"] < result["original"]["params"]
    # stronger compression loses more of the weights, method by method
    for first, second in zip(rows[:3], rows[3:], strict=True):
        assert second["weight_error"] > first["weight_error"]
    assert result["settings"]["eval_images"] == 10
    assert "sqrt(sum_l" in result["definitions"]["weight_error"]
    table = (out / "compare.md").read_text()
    assert "| 4x params | tucker2 |" in table and "weight error" in table
    assert "| 2x params | ht2 |" in capsys.readouterr().out


def test_compare_macs_target_and_latency(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    extra = ["--target-macs", "3", "--methods", "ht2", "--batch-sizes", "1,2", "--repeats", "1"]
    assert _compare(tiny, out, *extra) == 0
    (row,) = json.loads((out / "compare.json").read_text())["rows"]
    assert row["target_kind"] == "macs"
    assert abs(row["mac_reduction"] / 3 - 1) <= 0.02
    assert set(row["speedup"]) == {"1", "2"} and all(v > 0 for v in row["speedup"].values())
    assert "latency x b2" in (out / "compare.md").read_text()


def test_unreachable_target_is_a_row_with_its_reason(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    extra = ["--target-params", "2,1000", "--methods", "svd", "--no-latency"]
    assert _compare(tiny, out, *extra) == 0
    reached, missed = json.loads((out / "compare.json").read_text())["rows"]
    assert reached["met"] is True and reached["param_reduction"] > 1.9
    assert missed["met"] is None and missed["param_reduction"] is None
    assert missed["top1"] is None and "out of reach" in missed["note"]
    assert "| 1000x params | svd | - |" in (out / "compare.md").read_text()


def test_rows_of_a_random_init_run_share_one_set_of_weights(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert _compare(tiny, out, "--target-params", "2", "--methods", "ht2,ht2", "--no-latency") == 0
    first, second = json.loads((out / "compare.json").read_text())["rows"]
    assert first["params"] == second["params"]
    assert first["weight_error"] == second["weight_error"]


def test_refine_sweeps_lower_the_weight_error_at_the_same_size(tiny: Path, tmp_path: Path) -> None:
    weights = tmp_path / "r20.pt"  # the same weights in both runs
    torch.save(models.create("cifar10_resnet20").state_dict(), weights)
    common = ["compare", "cifar10_resnet20", "--weights", str(weights), "--data", str(tiny)]
    common += ["--eval-images", "10", "--calib-images", "10", "--workers", "0", "--no-latency"]
    common += ["--target-params", "3", "--methods", "ht2,tucker2"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "als"), "--refine-sweeps", "4"]) == 0
    plain = json.loads((tmp_path / "plain" / "compare.json").read_text())
    refined = json.loads((tmp_path / "als" / "compare.json").read_text())
    assert refined["settings"]["refine_sweeps"] == 4 and plain["settings"]["refine_sweeps"] == 0
    for before, after in zip(plain["rows"], refined["rows"], strict=True):
        assert after["params"] == before["params"]
        assert after["weight_error"] < before["weight_error"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target-params", "2", "--refine-sweeps", "-3"], "expected a whole number >= 0"),
        (["--target-params", "2", "--refine-sweeps", "two"], "whole number >= 0, got 'two'"),
        (["--target-params", "1"], "reduction factor above 1"),
        (["--target-params", "2,0.5"], "reduction factor above 1"),
        (["--target-macs", "four"], "expected a reduction factor"),
        (["--target-params", "2", "--methods", "ht2,magic"], "methods are among"),
        ([], "give --target-params and/or --target-macs"),
        (["--target-params", "2", "--eval-images", "0"], "--eval-images: expected a positive"),
    ],
)
def test_bad_compare_options(tiny: Path, tmp_path: Path, capsys, extra, message) -> None:
    out = tmp_path / "cmp"
    assert _compare(tiny, out, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_train_split_fails_before_any_work(tmp_path: Path, capsys) -> None:
    data = write_image_tree(tmp_path / "data", splits=("test",), classes=TEN, per_class=1)
    out = tmp_path / "cmp"
    assert _compare(data, out, "--target-params", "2", "--methods", "svd") == 2
    err = capsys.readouterr().err
    assert "no train/ folder" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".cmp*"))


def test_weight_error_weighs_layers_by_their_norm() -> None:
    layers = [
        LayerReport("a", "Conv2d", "ht2", rel_error=0.5),
        LayerReport("b", "Conv2d", "svd", rel_error=0.1),
        LayerReport("c", "Conv2d", "dense"),  # kept dense: not counted
    ]
    report = CompressionReport("m", "ht2", 0.9, True, 10, 5, None, None, 0.0, layers)
    norms = {"a": 1.0, "b": 3.0, "c": 100.0}
    expected = math.sqrt(((0.5 * 1.0) ** 2 + (0.1 * 3.0) ** 2) / (1.0**2 + 3.0**2))
    assert weight_error(report, norms) == pytest.approx(expected, rel=1e-12)
    assert (
        weight_error(CompressionReport("m", "ht2", 0.9, True, 10, 10, None, None, 0.0), {}) is None
    )


def test_allocations_plug_in_and_label_their_rows() -> None:
    def half_energy(request) -> dict:
        assert isinstance(request.model, torch.nn.Module) and request.method == "svd"
        return {"energy": 0.5}

    base, rows = run_compare(
        lambda: models.create("cifar10_resnet20", weights=None),
        (3, 32, 32),
        [Target("params", 2.0)],
        ["svd"],
        batch_sizes=[],
        allocations={"uniform": uniform_allocation, "half": half_energy},
        progress=False,
    )
    assert [row.allocation for row in rows] == ["uniform", "half"]
    assert rows[0].met is True
    assert rows[1].met is False and "not within 2% of the target" in rows[1].note
    assert rows[1].energy == 0.5 and rows[1].param_reduction != rows[0].param_reduction
    table = compare_markdown(CompareResult("cifar10_resnet20", base, rows))
    assert "| allocation |" in table and "| 2x params | svd | half |" in table


@pytest.mark.slow
def test_cp_reaches_its_target(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert _compare(tiny, out, "--target-params", "2", "--methods", "cp", "--no-latency") == 0
    (row,) = json.loads((out / "compare.json").read_text())["rows"]
    assert row["method"] == "cp" and abs(row["param_reduction"] / 2 - 1) <= 0.02
    assert 0.0 < row["weight_error"] < 1.0


def test_prune_is_compared_at_the_same_target_once_whatever_the_allocations() -> None:
    from ht2.experiments.compare import Energy

    base, rows = run_compare(
        lambda: models.create("cifar10_resnet20", weights=None),
        (3, 32, 32),
        [Target("macs", 2.0), Energy(0.9)],
        ["spatial-svd", "prune"],
        batch_sizes=[],
        allocations={"uniform": uniform_allocation},
        progress=False,
    )
    pruned = [row for row in rows if row.method == "prune"]
    assert [row.target_kind for row in pruned] == ["macs", "energy"]
    assert pruned[0].met is True and pruned[0].allocation == "-"
    assert 2.0 <= pruned[0].mac_reduction < 2.04 and pruned[0].weight_error is None
    assert pruned[1].param_reduction is None and "size target, not an energy" in pruned[1].note
    _, rows = run_compare(
        lambda: models.create("cifar10_resnet20", weights=None),
        (3, 32, 32),
        [Target("params", 2.0)],
        ["spatial-svd", "prune"],
        batch_sizes=[],
        allocations={"uniform": uniform_allocation, "half": lambda request: {"energy": 0.5}},
        progress=False,
    )
    assert [(row.method, row.allocation) for row in rows] == [
        ("spatial-svd", "uniform"),
        ("spatial-svd", "half"),
        ("prune", "-"),
    ]
    table = compare_markdown(CompareResult("cifar10_resnet20", base, rows))
    assert "| 2x params | prune | - |" in table
