"""benchmarks/realized_speed.py: a tiny run writes the JSON the report reads (every row, the
best against the best, the targets, portable paths), and bad flags or a foreign --out are one
line each, refused before anything is compressed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from tests._shared import load_benchmark

TINY = ["--batch-sizes", "1", "--runtimes", "eager", "--repeats", "1", "--warmup", "0"]


@pytest.fixture
def realized(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh copy of the script, as when it is run."""
    return load_benchmark("realized_speed", monkeypatch)


@pytest.mark.slow
def test_tiny_run_writes_every_row_best_and_targets(realized: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "rs.json"
    argv = ["--models", "cifar10_resnet20", *TINY, "--threads", "1", "--shared", str(tmp_path)]
    assert realized.main([*argv, "--target-speedup", "1.2", "--prune", "--out", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["benchmark"] == "realized_speed" and data["threads"] == 1
    assert not any(os.path.isabs(part) for part in data["command"].split())
    assert len(data["load_average"]["start"]) == len(data["load_average"]["end"]) == 3
    assert {t["runtime"] for t in data["treatments"]} == {"eager"}
    assert all(t["fold_bn"] for t in data["treatments"])
    (model,) = data["models"]
    assert model["weights"] == "random init" and model["compression"] == "e=0.7"
    assert len(model["rows"]) == len(data["treatments"])
    for row in model["rows"]:
        assert row["treatment"] == row["baseline_treatment"]
        assert row["speedup"] == pytest.approx(row["baseline_latency_ms"] / row["latency_ms"])
    (best,) = model["best"]
    fastest = min(row["baseline_latency_ms"] for row in model["rows"])
    assert best["best_against_best"]["baseline_latency_ms"] == fastest
    assert [t["reached"] for t in data["targets"]] == [None, None, None]
    (speed,) = model["speed_target"]  # planned where the original ran fastest, timed folded
    theirs = best["best_against_best"]["baseline_treatment"]
    assert speed["treatment"] == theirs and speed["planned_in"] == {**theirs, "fold_bn": False}
    assert speed["speedup"] == pytest.approx(speed["baseline_latency_ms"] / speed["latency_ms"])
    pruned = model["pruned"]  # the rival at the same MACs, timed in the same treatments
    assert model["mac_reduction"] <= pruned["mac_reduction"] < model["mac_reduction"] * 1.02
    assert [r["treatment"] for r in pruned["rows"]] == [r["treatment"] for r in model["rows"]]
    assert all(r["treatment"] == r["baseline_treatment"] for r in pruned["rows"])


def test_foreign_out_file_is_refused_and_left_alone(
    realized: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "other.json"
    out.write_text('{"rows": []}\n', encoding="utf-8")
    assert realized.main(["--models", "cifar10_resnet20", *TINY, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "exists and is not a realized_speed result" in error
    assert out.read_text(encoding="utf-8") == '{"rows": []}\n'


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--models", "resnet9", "--models takes names from"),
        ("--runtimes", "tvm", "--runtimes takes names from"),
        ("--repeats", "0", "--repeats must be at least 1, got 0"),
        ("--target-speedup", "1", "--target-speedup must be above 1, got 1"),
    ],
)
def test_bad_flag_is_one_line(
    realized: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    message: str,
) -> None:
    argv = ["--models", "cifar10_resnet20", *TINY, "--out", str(tmp_path / "rs.json"), flag, value]
    assert realized.main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert not (tmp_path / "rs.json").exists()


def test_results_go_beside_a_file_that_appeared_meanwhile(
    realized: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "rs.json"
    out.write_text("not ours\n", encoding="utf-8")
    written = realized.write_json(out, {"benchmark": "realized_speed"})
    assert written != out and written.parent == tmp_path
    assert out.read_text(encoding="utf-8") == "not ours\n"
    assert json.loads(written.read_text(encoding="utf-8")) == {"benchmark": "realized_speed"}


def test_earlier_results_are_replaced_whole(realized: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "rs.json"
    realized.write_json(out, {"benchmark": "realized_speed", "run": 1})
    assert realized.write_json(out, {"benchmark": "realized_speed", "run": 2}) == out
    assert json.loads(out.read_text(encoding="utf-8"))["run"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rs.json"]


def test_a_failed_write_leaves_no_temporary(realized: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "rs.json"
    with pytest.raises(TypeError):
        realized.write_json(out, {"benchmark": "realized_speed", "rows": object()})
    assert list(tmp_path.iterdir()) == []


def test_accuracy_is_measured_on_a_copy_and_only_for_real_weights(
    realized: ModuleType, tmp_path: Path
) -> None:
    import argparse

    import torch

    import ht2
    from tests._shared import write_image_tree

    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=2)
    args = argparse.Namespace(data=data, eval_images=None, calib_images=10)
    assert realized.accuracy_meter(args, "cifar10_resnet20", "random init") is None
    no_data = argparse.Namespace(data=None, eval_images=None, calib_images=10)
    assert realized.accuracy_meter(no_data, "cifar10_resnet20", "w.th") is None
    measure = realized.accuracy_meter(args, "cifar10_resnet20", "w.th")
    model = ht2.models.create("cifar10_resnet20").eval()
    before = model.bn1.running_mean.clone()
    found = measure(model)
    assert set(found) == {"top1", "top1_calibrated"}
    assert all(0.0 <= value <= 100.0 for value in found.values())
    assert torch.equal(model.bn1.running_mean, before)  # calibrated a copy, not the timed model
