"""`ht2 sweep`: one row per method and energy, the three files, the plot, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ht2.cli.main import main
from tests._shared import write_image_tree


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    classes = tuple("abcdefghij")
    return write_image_tree(tmp_path / "data", splits=("test",), classes=classes, per_class=2)


def test_sweep_writes_table_json_and_pareto(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep"
    code = main(
        [
            "sweep",
            "cifar10_resnet20",
            "--random-init",
            "--data",
            str(tiny),
            "--energies",
            "0.9,0.5",
            "--methods",
            "ht2,svd",
            "--batch-sizes",
            "1,2",
            "--repeats",
            "1",
            "--workers",
            "0",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["pareto.png", "sweep.json", "sweep.md"]
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "sweep.json").read_text())
    rows = result["rows"]
    assert [(r["method"], r["energy"]) for r in rows] == [
        ("ht2", 0.9),
        ("ht2", 0.5),
        ("svd", 0.9),
        ("svd", 0.5),
    ]
    assert all(set(r["speedup"]) == {"1", "2"} for r in rows)
    base = result["original"]["top1"]
    assert all(r["delta_top1"] == pytest.approx(r["top1"] - base) for r in rows)
    assert rows[1]["param_reduction"] > rows[0]["param_reduction"]
    text = capsys.readouterr().out
    assert "| ht2 | 0.9 |" in text and "latency x b2" in text


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--energies", "0.9,1.2", "energy must be in (0, 1]"),
        ("--methods", "ht2,magic", "methods are among"),
        ("--batch-sizes", "0", "batch"),
    ],
)
def test_bad_sweep_options(tmp_path: Path, capsys, flag: str, value: str, message: str) -> None:
    out = tmp_path / "o"
    code = main(["sweep", "cifar10_resnet20", "--random-init", flag, value, "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
