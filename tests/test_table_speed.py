"""benchmarks/table_speed.py: the paper table's models timed against their base, resumably."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

import ht2
from tests._shared import load_benchmark

KEY = "cifar10_resnet20/paper/ht2/2.5x/e10"


@pytest.fixture
def speed(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_benchmark("table_speed", monkeypatch)


def _table(tmp_path: Path) -> list[str]:
    """A paper table with a base row and one compressed row whose model is in its work folder."""
    keys = ["cifar10_resnet20/base/dense/1x/e10", KEY, "cifar10_resnet20/best/cp/2.5x/e10"]
    rows = [{"key": k, "net": "cifar10_resnet20", "pipeline": k.split("/")[1]} for k in keys]
    rows.append(rows[1] | {"key": f"{KEY}/lr0.003", "lr": 0.003})  # the same model, tuned apart
    rows.append(rows[1] | {"key": f"{KEY}/b32", "batch_size": 32})
    (tmp_path / "table.json").write_text(json.dumps({"rows": rows}))
    model = ht2.models.create("cifar10_resnet20", weights="pretrained").eval()
    ht2.compress(model, energy=0.5, example_input=torch.zeros(1, 3, 32, 32))
    ht2.save(model, tmp_path / "work" / KEY.replace("/", "-") / "compressed")
    return [
        "--results", str(tmp_path / "table.json"),
        "--work", str(tmp_path / "work"),
        "--out", str(tmp_path / "speed.json"),
        "--runtimes", "eager",
        "--batch-sizes", "1,2",
        "--repeats", "1",
        "--warmup", "0",
    ]  # fmt: skip


def test_rows_are_timed_once_against_the_base_and_skipped_after(
    speed: ModuleType, tmp_path: Path, capsys, monkeypatch
) -> None:
    argv = _table(tmp_path)
    assert speed.main(argv) == 0
    out = capsys.readouterr().out
    assert "cifar10_resnet20/best/cp/2.5x/e10: no compressed model in" in out
    assert "base/dense" not in out  # the base is the baseline, not a row
    assert "lr0.003" not in out and "b32" not in out  # their model is KEY's, timed once
    data = json.loads((tmp_path / "speed.json").read_text())
    assert data["benchmark"] == "table_speed" and data["command"].startswith(
        "python benchmarks/table_speed.py --results"
    )
    (row,) = data["rows"]
    assert row["key"] == KEY and row["macs_x"] > 1.5
    assert [best["batch_size"] for best in row["best"]] == [1, 2]
    pair = row["best"][0]["best_against_best"]
    assert pair["speedup"] == pytest.approx(pair["baseline_latency_ms"] / pair["latency_ms"])
    # every pair is like for like: the base ran in the compressed model's treatment
    assert all(r["treatment"] == r["baseline_treatment"] for r in row["rows"])
    assert {r["treatment"]["fold_bn"] for r in row["rows"]} == {True}

    calls: list[str] = []

    def fake(row, folder, args):
        calls.append(row["key"])
        return {**data["rows"][0], "load": [0.0, 0.0]}

    monkeypatch.setattr(speed, "time_row", fake)
    assert speed.main(argv) == 0
    assert calls == [] and f"{KEY}: timed already, skipped" in capsys.readouterr().out
    assert speed.main([*argv, "--again"]) == 0
    assert calls == [KEY]


def test_the_recorded_command_fills_the_whole_column(speed: ModuleType) -> None:
    # the column gathers several runs: record the command that fills it, not one run's subset
    subset = ["--rows", "a/*,b/*", "--threads", "1", "--again"]
    assert speed.command_line(subset) == "python benchmarks/table_speed.py --threads 1"
    assert speed.command_line(["--rows=a/*", "--repeats", "3"]).endswith(".py --repeats 3")


def test_other_settings_retime_and_foreign_output_is_refused(
    speed: ModuleType, tmp_path: Path, capsys, monkeypatch
) -> None:
    argv = _table(tmp_path)
    (tmp_path / "speed.json").write_text(json.dumps({"benchmark": "something else"}))
    with pytest.raises(SystemExit, match="holds other results; give --out"):
        speed.main(argv)
    (tmp_path / "speed.json").write_text(
        json.dumps({"benchmark": "table_speed", "rows": [{"key": KEY, "settings": {}}]})
    )
    calls: list[str] = []

    def fake(row, folder, args):
        calls.append(row["key"])
        return {"key": row["key"], "macs_x": 2.0, "best": [], "settings": {}}

    monkeypatch.setattr(speed, "time_row", fake)
    assert speed.main(argv) == 0
    assert calls == [KEY]  # timed with other settings before: timed again
