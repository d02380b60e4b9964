"""benchmarks/report.py: BENCHMARKS.md is the generated report of benchmarks/results/, tables
carry the JSON's numbers, and --check names the section that went stale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests._shared import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "report.py"


def _report(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _synthetic(folder: Path, paper_rows: list[dict] | None = None) -> Path:
    """A results folder holding one compression size and, if given, paper-table rows."""
    folder.mkdir()
    sizes = {
        "sizes": [
            {
                "model": "cifar10_resnet20",
                "energy": 0.75,
                "params_before": 1000,
                "params_after": 400,
                "param_reduction": 2.5,
                "macs_before": 9000,
                "macs_after": 2000,
                "mac_reduction": 4.5,
                "seconds": 0.125,
            }
        ],
        "timings": [],
        "torch_threads": 1,
    }
    (folder / "compression_sizes.json").write_text(json.dumps(sizes), encoding="utf-8")
    if paper_rows is not None:
        (folder / "paper_table.json").write_text(json.dumps({"rows": paper_rows}), encoding="utf-8")
    return folder


def test_committed_report_equals_the_generated_one(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    assert _report("--out", out).returncode == 0
    assert out.read_text(encoding="utf-8") == (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")


def test_synthetic_results_render_their_numbers(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    assert _report("--results", _synthetic(tmp_path / "results"), "--out", out).returncode == 0
    text = out.read_text(encoding="utf-8")
    assert "| ResNet-20 | 0.75 | 1,000 | 400 | 2.50x | 4.50x |" in text
    assert "No rows yet." in text


def test_paper_table_rows_are_rendered_when_present(tmp_path: Path) -> None:
    row = {
        "net": "cifar10_resnet20",
        "pipeline": "best",
        "method": "ht2",
        "target": 2.5,
        "epochs": 3,
        "params_x": 2.51,
        "macs_x": 2.2,
        "top1_before": 70.125,
        "top1_after": 85.5,
        "delta": -0.25,
        "minutes": 12.0,
    }
    out = tmp_path / "report.md"
    results = _synthetic(tmp_path / "results", [row])
    assert _report("--results", results, "--out", out).returncode == 0
    text = out.read_text(encoding="utf-8")
    assert "| best | HT-2 | 2.5x | 2.51x | 2.20x | 70.13 | 85.50 | -0.25 | 12.0 |" in text
    assert "No rows yet." not in text


def test_paper_table_rows_tuned_apart_get_their_table_and_command(tmp_path: Path) -> None:
    row = {"net": "cifar10_resnet20", "pipeline": "best", "method": "ht2", "target": 3.8}
    row |= {"epochs": 10, "params_x": 3.8, "macs_x": 2.3, "top1_before": 75.0, "delta": -1.5}
    row |= {"top1_after": 85.0, "minutes": 30.0, "settings": {"threads": 1, "workers": 1}}
    base = row | {"pipeline": "base", "method": "dense", "target": 1.0, "top1_after": 86.5}
    speed = row | {"pipeline": "speed", "target": 1.3}
    rows = [base, row, speed] + [r | {"lr": 0.003, "top1_after": 86.0} for r in (base, row)]
    rows += [r | {"batch_size": 32, "top1_after": 86.2} for r in (base, row)]
    out = tmp_path / "report.md"
    assert (
        _report("--results", _synthetic(tmp_path / "results", rows), "--out", out).returncode == 0
    )
    text = out.read_text(encoding="utf-8")
    run = "python benchmarks/paper_table.py --data DATA --threads 1 --workers 1"
    assert f"nohup {run} --speed 1.3 > paper_table.log" in text
    picked = "--rows '*/base/dense/1x/*,*/best/ht2/3.8x/*' > variant.log"
    assert f"nohup {run} --lr 0.003 {picked}" in text
    assert f"nohup {run} --batch-size 32 {picked}" in text
    plain = text.index("ResNet-20, 10 epochs of fine-tuning:")
    own_lr = text.index("ResNet-20, 10 epochs of fine-tuning, peak learning rate 0.003")
    assert plain < text.index("ResNet-20, 10 epochs of fine-tuning, batch 32 (not 128)") < own_lr


def test_generating_twice_gives_the_same_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a.md", tmp_path / "b.md"
    assert _report("--out", first).returncode == 0
    assert _report("--out", second).returncode == 0
    assert first.read_bytes() == second.read_bytes()


def test_check_names_the_stale_section(tmp_path: Path) -> None:
    results, out = _synthetic(tmp_path / "results"), tmp_path / "report.md"
    assert _report("--results", results, "--out", out).returncode == 0
    assert _report("--results", results, "--out", out, "--check").returncode == 0
    out.write_text(out.read_text(encoding="utf-8").replace("2.50x", "2.60x"), encoding="utf-8")
    checked = _report("--results", results, "--out", out, "--check")
    assert checked.returncode == 1
    assert "section: How small: compression sizes" in checked.stdout


def test_missing_results_folder_is_one_line(tmp_path: Path) -> None:
    checked = _report("--results", tmp_path / "absent", "--out", tmp_path / "r.md")
    assert checked.returncode == 2
    assert checked.stderr.strip().count("\n") == 0 and "is not a folder" in checked.stderr


def _realized(folder: Path) -> None:
    """A realized_speed.json of one ResNet-56 batch size, as benchmarks/realized_speed.py writes."""
    onnx = {"dtype": "float32", "memory_format": "contiguous", "runtime": "onnxruntime"}
    eager = {"dtype": "bfloat16", "memory_format": "channels_last", "runtime": "eager"}
    onnx, eager = {**onnx, "fold_bn": True}, {**eager, "fold_bn": True}
    best = {
        "batch_size": 128,
        "fastest_like_for_like": {"treatment": onnx, "speedup": 1.25},
        "best_against_best": {
            "treatment": onnx,
            "baseline_treatment": eager,
            "latency_ms": 40.0,
            "baseline_latency_ms": 64.0,
            "speedup": 1.6,
            "realized_over_mac": 0.34,
        },
    }
    model = {
        "model": "cifar10_resnet56",
        "compression": "e=0.7",
        "weights": "../shared/weights/resnet56-4bfd9763.th",
        "mac_reduction": 4.71,
        "best": [best],
    }
    target = {
        "model": "cifar10_resnet56",
        "compression": "e=0.7",
        "batch_size": 128,
        "target_speedup": 1.5,
        "reached": 1.6,
        "met": True,
    }
    data = {
        "command": "python benchmarks/realized_speed.py --models cifar10_resnet56",
        "runtimes": ["eager", "onnxruntime"],
        "repeats": 20,
        "warmup": 3,
        "device": "cpu",
        "threads": 2,
        "torch": "2.14.1",
        "load_average": {"start": [1.5, 1.0, 1.0], "end": [2.25, 1.0, 1.0]},
        "notes": ["compile left out"],
        "targets": [target],
        "models": [model],
    }
    (folder / "realized_speed.json").write_text(json.dumps(data), encoding="utf-8")


def test_realized_speed_section_renders_best_against_best_and_targets(tmp_path: Path) -> None:
    results, out = _synthetic(tmp_path / "results"), tmp_path / "report.md"
    _realized(results)
    assert _report("--results", results, "--out", out).returncode == 0
    text = out.read_text(encoding="utf-8")
    assert "## How fast: realized speed, best against best" in text
    assert "python benchmarks/realized_speed.py --models cifar10_resnet56\n```" in text
    assert (
        "| ResNet-56 | e=0.7 | 128 | float32 NCHW onnxruntime | 40.00 | bfloat16 NHWC eager | "
        "64.00 | 1.60x | 4.71x | 0.34 | 1.25x (float32 NCHW onnxruntime) |"
    ) in text
    assert "| ResNet-56 | e=0.7 | 128 | >= 1.50x | 1.60x | met |" in text
    prose = " ".join(text.split())  # paragraphs are wrapped at 100 columns
    assert "load average 1.50 at the start and 2.25 at the end" in prose
    assert "- compile left out" in text


def test_realized_speed_renders_pruning_and_what_the_speed_costs(tmp_path: Path) -> None:
    results, out = _synthetic(tmp_path / "results"), tmp_path / "report.md"
    _realized(results)
    path = results / "realized_speed.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data["models"][0]
    pair = {**model["best"][0]["best_against_best"], "latency_ms": 20.0, "speedup": 3.2}
    model["pruned"] = {
        "param_reduction": 4.1,
        "mac_reduction": 4.75,
        "best": [{"batch_size": 128, "best_against_best": pair}],
        "accuracy": {"top1": 12.5, "top1_calibrated": 40.25},
    }
    model["accuracy"] = {
        "original": {"top1": 83.2, "top1_calibrated": 83.0},
        "compressed": {"top1": 30.0, "top1_calibrated": 61.5},
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    assert _report("--results", results, "--out", out).returncode == 0
    text = out.read_text(encoding="utf-8")
    assert (
        "| ResNet-56 | 128 | float32 NCHW onnxruntime | 20.00 | bfloat16 NHWC eager | 64.00 | "
        "3.20x | 4.75x | 4.10x | 1.60x |"
    ) in text
    assert "| ResNet-56 | original | - | 83.20 / 83.00 |" in text
    assert "| ResNet-56 | e=0.7 | 4.71x | 30.00 / 61.50 |" in text
    assert "| ResNet-56 | channel pruning | 4.75x | 12.50 / 40.25 |" in text


def test_realized_speed_section_is_absent_without_its_json(tmp_path: Path) -> None:
    results, out = _synthetic(tmp_path / "results"), tmp_path / "report.md"
    assert _report("--results", results, "--out", out).returncode == 0
    assert "realized speed" not in out.read_text(encoding="utf-8")


def _rounding_row(energy: float, multiple: int, batch: int, ms: float, unrounded_ms: float) -> dict:
    """One row of a round_ranks-*.json, as benchmarks/round_ranks.py writes it."""
    treatment = {
        "dtype": "bfloat16",
        "memory_format": "channels_last",
        "runtime": "eager",
        "fold_bn": True,
    }
    original_ms = 2.0 if batch == 1 else 80.0
    return {
        "treatment": treatment,
        "energy": energy,
        "round_ranks": multiple,
        "batch_size": batch,
        "params_x": 3.94 if multiple == 1 else 3.19,
        "macs_x": 4.15 if multiple == 1 else 3.02,
        "rounding_params": 0 if multiple == 1 else 15965,
        "folded": 19,
        "original_ms": original_ms,
        "original_spread": {"q1_ms": original_ms, "q3_ms": original_ms},
        "ms": ms,
        "spread": {"q1_ms": ms, "q3_ms": ms},
        "speedup": original_ms / ms,
        "vs_unrounded": unrounded_ms / ms,
    }


def test_rounding_run_with_a_treatment_renders_its_table_named(tmp_path: Path) -> None:
    results, out = _synthetic(tmp_path / "results"), tmp_path / "report.md"
    rows = [
        _rounding_row(0.7, 1, 1, 1.6, 1.6),
        _rounding_row(0.7, 8, 1, 1.25, 1.6),
        _rounding_row(0.7, 1, 128, 64.0, 64.0),
        _rounding_row(0.7, 8, 128, 80.0, 64.0),
    ]
    best = {"energy": 0.7, "round_ranks": 8, "batch_size": 1, "vs_unrounded": 1.28}
    data = {
        "benchmark": "round_ranks",
        "command": "python benchmarks/round_ranks.py --dtype bfloat16 --channels-last --fold-bn",
        "model": "cifar10_resnet20",
        "cpu": {"model": "Test CPU", "count": 2, "avx512_bf16": True, "amx": True},
        "bfloat16_native": True,
        "threads": 1,
        "repeats": 30,
        "warmup": 3,
        "matrix": False,
        "treatments": [rows[0]["treatment"]],
        "load_average": {"start": [0.5, 0.5, 0.5], "end": [0.75, 0.5, 0.5]},
        "notes": [],
        "verdicts": [
            {"treatment": rows[0]["treatment"], "cells": 2, "rounded_faster": 1, "best": best}
        ],
        "rows": rows,
    }
    name = "round_ranks-bf16-nhwc-folded.json"
    (results / name).write_text(json.dumps(data), encoding="utf-8")
    assert _report("--results", results, "--out", out).returncode == 0
    text = out.read_text(encoding="utf-8")
    assert "## How fast: rank rounding" in text
    assert f"--dtype bfloat16 --channels-last --fold-bn   # {name}\n```" in text
    assert "| e | round | params x | MACs x | batch 1 | batch 128 | vs round 1, batch 1 | " in text
    assert "| 0.7 | 1 | 3.94 | 4.15 | 1.25x | 1.25x | 1.00x | 1.00x |" in text
    assert "| 0.7 | 8 | 3.19 | 3.02 | 1.60x | 1.00x | 1.28x | 0.80x |" in text
    prose = " ".join(text.split())  # paragraphs are wrapped at 100 columns
    assert (
        "bfloat16, NHWC, eager, BatchNorms folded: the original takes 2.00 ms at batch 1, "
        "80.0 ms at batch 128. Rounded ranks ran faster than round 1 in 1 of 2 cells; best "
        "1.28x (e 0.7, round 8, batch 1)."
    ) in prose
    assert "Test CPU (2 cores, AVX-512 BF16 yes, AMX yes)" in prose
    assert "--threads 1 --repeats 30\n```" not in text  # no float32 NCHW run was given


def test_bundled_weights_render_with_their_training_history(tmp_path: Path) -> None:
    folder = _synthetic(tmp_path / "results")
    epochs = [{"epoch": e, "top1": 50.0 + e, "seconds": 100.0 + e} for e in range(1, 9)]
    nets = [
        {
            "net": "cifar10_resnet56",
            "top1": 88.25,
            "top5": 99.5,
            "params": 855770,
            "macs": 125485706,
            "epochs": epochs,
        },
        {
            "net": "cifar10_resnet20",
            "top1": 86.84,
            "top5": 99.4,
            "params": 1000,
            "macs": 9000,
            "epochs": None,
        },
    ]
    (folder / "bundled.json").write_text(json.dumps({"nets": nets}), encoding="utf-8")
    out = tmp_path / "report.md"
    assert _report("--results", folder, "--out", out).returncode == 0
    text = out.read_text(encoding="utf-8")
    history = "51.00 after 1, 53.00 after 3, 55.00 after 5, 57.00 after 7, 58.00 after 8"
    assert (
        f"| ResNet-56 | 855,770 | 125,485,706 | 88.25 | 99.50 | 8, 101-108 s each | {history} |"
        in text
    )
    assert "| ResNet-20 | 1,000 | 9,000 | 86.84 | 99.40 | - | - |" in text


def test_bundled_benchmark_reads_the_epochs_of_a_training_log(tmp_path: Path, monkeypatch) -> None:
    epochs_of = load_benchmark("bundled", monkeypatch).epochs_of
    log = tmp_path / "log.jsonl"
    lines = [
        {"epoch": 1, "lr": 0.1, "loss": 1.5, "top1": 44.44, "seconds": 104.51},
        {"note": "resumed"},
        {"epoch": 2, "lr": 0.1, "loss": 1.2, "top1": 58.59, "seconds": 98.04},
    ]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    assert epochs_of(log) == [
        {"epoch": 1, "top1": 44.44, "seconds": 104.5},
        {"epoch": 2, "top1": 58.59, "seconds": 98.0},
    ]
