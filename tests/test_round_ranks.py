"""benchmarks/round_ranks.py: the JSON is named by its treatment, the verdict counts where
rounding beat round 1, a tiny run times every variant under the treatment asked, and bad flags
are one line each, refused before anything is compressed (the committed round_ranks.json among
them); the JSON is written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests._shared import load_benchmark

TINY = ["--energies", "0.7", "--multiples", "1,8", "--batch-sizes", "1", "--repeats", "1"]


@pytest.fixture
def rounding(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh copy of the script, as when it is run."""
    return load_benchmark("round_ranks", monkeypatch)


@pytest.mark.parametrize(
    ("flags", "name"),
    [
        ([], "round_ranks-f32-nchw.json"),
        (["--dtype", "bfloat16", "--channels-last"], "round_ranks-bf16-nhwc.json"),
        (["--fold-bn"], "round_ranks-f32-nchw-folded.json"),
        (["--matrix"], "round_ranks-matrix.json"),
        (["--matrix", "--dtype", "bfloat16"], "round_ranks-matrix-bf16.json"),
    ],
)
def test_file_name_says_the_treatment(rounding: ModuleType, flags: list[str], name: str) -> None:
    args = rounding.parse_args(flags)
    rounding.check_args(args)
    assert rounding.file_name(args) == name


def test_matrix_is_every_eager_dtype_and_layout_folded(rounding: ModuleType) -> None:
    import torch

    args = rounding.parse_args(["--matrix"])
    rounding.check_args(args)
    chosen = rounding.treatments_asked(args, torch.device("cpu"))
    cells = sorted((t.dtype, t.channels_last, t.runtime, t.fold_bn) for t in chosen)
    assert cells == [
        ("bfloat16", False, "eager", True),
        ("bfloat16", True, "eager", True),
        ("float32", False, "eager", True),
        ("float32", True, "eager", True),
    ]


def test_verdict_counts_cells_where_rounding_beat_round_one(rounding: ModuleType) -> None:
    treatment = rounding.Treatment("bfloat16", True, "eager", True)

    def row(multiple: int, batch: int, vs: float) -> dict:
        keys = {"energy": 0.7, "round_ranks": multiple, "batch_size": batch, "vs_unrounded": vs}
        return {"treatment": treatment.to_dict(), **keys}

    rows = [row(1, 1, 1.0), row(8, 1, 1.25), row(16, 1, 0.5), row(8, 128, 0.9)]
    (verdict,) = rounding.verdicts([treatment], rows)
    assert verdict["cells"] == 3 and verdict["rounded_faster"] == 1
    assert verdict["best"] == {
        "energy": 0.7,
        "round_ranks": 8,
        "batch_size": 1,
        "vs_unrounded": 1.25,
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dtype", "float16"], "--dtype must be one of float32, bfloat16, got 'float16'"),
        (["--energies", "1.5"], "--energies must each be in (0, 1]; got 1.5 in '1.5'"),
        (["--multiples", "8,x"], "--multiples takes ints separated by commas; got '8,x'"),
        (["--repeats", "0"], "--repeats must be at least 1, got 0"),
    ],
)
def test_bad_flags_are_one_line(
    rounding: ModuleType,
    flags: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert rounding.main([*flags, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"round_ranks: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_the_committed_results_are_not_an_out_file(
    rounding: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    committed = rounding.COMMITTED
    before = committed.read_bytes()
    assert rounding.main(["--out-file", str(committed)]) == 2
    assert capsys.readouterr().err == (
        f"round_ranks: --out-file {committed} is the committed "
        "benchmarks/results/round_ranks.json: give another file name\n"
    )
    assert committed.read_bytes() == before


def test_the_json_is_replaced_whole_and_a_failed_write_leaves_nothing(
    rounding: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "rr.json"
    assert rounding.write_json(out, {"run": 1}) == out
    rounding.write_json(out, {"run": 2})
    assert json.loads(out.read_text(encoding="utf-8")) == {"run": 2}
    with pytest.raises(TypeError):
        rounding.write_json(out, {"run": object()})
    assert json.loads(out.read_text(encoding="utf-8")) == {"run": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["rr.json"]


@pytest.mark.slow
def test_tiny_run_times_each_variant_in_the_treatment_asked(
    rounding: ModuleType, tmp_path: Path
) -> None:
    argv = [*TINY, "--warmup", "0", "--dtype", "bfloat16", "--fold-bn", "--out", str(tmp_path)]
    assert rounding.main(argv) == 0
    data = json.loads((tmp_path / "round_ranks-bf16-nchw-folded.json").read_text("utf-8"))
    treatment = {"dtype": "bfloat16", "memory_format": "contiguous", "runtime": "eager"}
    assert data["treatments"] == [{**treatment, "fold_bn": True}]
    assert [(r["round_ranks"], r["batch_size"]) for r in data["rows"]] == [(1, 1), (8, 1)]
    unrounded, rounded = data["rows"]
    assert rounded["rounding_params"] > 0 and unrounded["rounding_params"] == 0
    assert rounded["folded"] > 0
    assert rounded["speedup"] == pytest.approx(rounded["original_ms"] / rounded["ms"])
    assert rounded["vs_unrounded"] == pytest.approx(unrounded["ms"] / rounded["ms"])
    assert data["verdicts"][0]["cells"] == 1
