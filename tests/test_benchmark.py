"""Latency helpers and `ht2 benchmark`: alternation, JSON schema, per-layer rows, bad input."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import ht2
from ht2.cli.main import main
from ht2.export import OrtRunner
from ht2.metrics import (
    Timing,
    factorized_layers,
    layer_input_shapes,
    num_threads,
    time_layers,
    time_models,
)

FAST = ["--repeats", "2", "--warmup", "1", "--threads", "1"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One CPU thread: on a shared machine two OpenMP threads can stall for whole seconds."""
    with num_threads(1):
        yield


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CIFAR ResNet-20 (random init) compressed at e=0.7, saved as a model folder."""
    with num_threads(1):
        model = ht2.models.create("cifar10_resnet20")
        report = ht2.compress(
            model, energy=0.7, example_input=torch.zeros(1, 3, 32, 32), keep_if_larger=False
        )
    return ht2.save(model, tmp_path_factory.mktemp("bench") / "r20", report)


def _stored_report(directory: Path) -> dict:
    return json.loads((directory / "report.json").read_text())


class Recorder:
    """A fake model that notes its name (and the thread count) each time it runs."""

    def __init__(self, name: str, log: list[str], threads: list[int]) -> None:
        self.name, self.log, self.threads = name, log, threads

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.name)
        self.threads.append(torch.get_num_threads())
        return x


def test_time_models_alternates_run_by_run() -> None:
    log: list[str] = []
    threads: list[int] = []
    models = [Recorder(name, log, threads) for name in "abc"]
    timings = time_models(models, torch.zeros(1), repeats=4, warmup=2, threads=1)
    assert log == ["a", "b", "c"] * 6
    assert set(threads) == {1}
    assert [len(t.times_ms) for t in timings] == [4, 4, 4]


def test_time_models_gives_positive_medians() -> None:
    big, small = nn.Linear(256, 256).eval(), nn.Linear(256, 8).eval()
    timings = time_models([big, small], torch.randn(64, 256), repeats=5, warmup=1)
    for timing in timings:
        assert timing.median_ms > 0
        assert timing.min_ms <= timing.q1_ms <= timing.median_ms <= timing.q3_ms <= timing.max_ms
        assert timing.iqr_ms >= 0


def test_timing_summary() -> None:
    timing = Timing((5.0, 1.0, 4.0, 2.0, 3.0))
    assert timing.median_ms == 3.0
    assert (timing.q1_ms, timing.q3_ms, timing.iqr_ms) == (2.0, 4.0, 2.0)
    assert (timing.min_ms, timing.max_ms) == (1.0, 5.0)
    assert Timing((7.0,)).iqr_ms == 0.0


def test_time_models_rejects_bad_counts() -> None:
    with pytest.raises(ht2.HT2Error, match="repeats"):
        time_models([nn.Identity()], torch.zeros(1), repeats=0)
    with pytest.raises(ht2.HT2Error, match="warm-up"):
        time_models([nn.Identity()], torch.zeros(1), warmup=-1)


def test_num_threads_restores_the_setting() -> None:
    before = torch.get_num_threads()
    with num_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_layer_input_shapes_are_what_each_layer_sees(compressed: Path) -> None:
    model = ht2.load(compressed)
    shapes = layer_input_shapes(model, torch.zeros(3, 3, 32, 32))
    assert set(shapes) == {name for name, _ in factorized_layers(model)}
    assert shapes["conv1"] == (3, 3, 32, 32)
    assert shapes["layer2.0.conv1"] == (3, 16, 32, 32)
    assert shapes["layer3.2.conv2"] == (3, 64, 8, 8)
    assert shapes["linear"] == (3, 64)


def test_time_layers_pairs_every_factorized_layer_with_its_dense_original(
    compressed: Path,
) -> None:
    model = ht2.load(compressed)
    results = time_layers(model, torch.zeros(2, 3, 32, 32), repeats=2, warmup=0)
    stored = {layer["name"]: layer for layer in _stored_report(compressed)["layers"]}
    assert [r.name for r in results] == [name for name, _ in factorized_layers(model)]
    for result in results:
        layer = stored[result.name]
        assert result.method == layer["method"] and result.ranks == layer["ranks"]
        assert result.input_shape[0] == 2
        assert (result.macs_dense, result.macs_factorized) == (
            layer["macs_before"],
            layer["macs_after"],
        )
        assert result.dense.median_ms > 0 and result.factorized.median_ms > 0
        assert result.speedup == result.dense.median_ms / result.factorized.median_ms


def test_benchmark_json_without_baseline(compressed: Path, cli) -> None:
    code, stdout, _ = cli(["benchmark", str(compressed), "--batch-sizes", "1,2", "--json", *FAST])
    assert code == 0
    result = json.loads(stdout)
    assert "layers" not in result
    assert [row["batch_size"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        assert set(row) == {"batch_size", "latency_ms", "latency_iqr_ms"}
        assert row["latency_ms"] > 0 and row["latency_iqr_ms"] >= 0


def test_benchmark_json_against_the_baseline(compressed: Path, cli) -> None:
    code, stdout, _ = cli(
        [
            "benchmark",
            str(compressed),
            "--against",
            "cifar10_resnet20",
            "--batch-sizes",
            "2",
            "--json",
            *FAST,
        ]
    )
    assert code == 0
    (row,) = json.loads(stdout)["rows"]
    assert {
        "batch_size",
        "latency_ms",
        "latency_iqr_ms",
        "baseline_latency_ms",
        "speedup",
        "mac_reduction",
    } <= set(row)
    stored = _stored_report(compressed)
    assert row["mac_reduction"] == pytest.approx(stored["macs_before"] / stored["macs_after"])
    assert row["speedup"] == pytest.approx(row["baseline_latency_ms"] / row["latency_ms"])
    assert row["baseline_latency_ms"] > 0


def test_benchmark_per_layer_covers_every_replaced_layer(compressed: Path, cli) -> None:
    code, stdout, _ = cli(
        ["benchmark", str(compressed), "--per-layer", "--batch-sizes", "1,2", "--json", *FAST]
    )
    assert code == 0
    layers = json.loads(stdout)["layers"]
    stored = _stored_report(compressed)["layers"]
    replaced = {layer["name"] for layer in stored if layer["method"] != "dense"}
    for size in (1, 2):
        rows = [layer for layer in layers if layer["batch_size"] == size]
        assert {row["name"] for row in rows} == replaced
        assert len(rows) == len(replaced)
        for row in rows:
            assert row["dense_ms"] > 0 and row["factorized_ms"] > 0
            assert row["input_shape"][0] == size


def test_benchmark_prints_tables(compressed: Path, cli) -> None:
    code, stdout, _ = cli(
        [
            "benchmark",
            str(compressed),
            "--against",
            "cifar10_resnet20",
            "--per-layer",
            "--batch-sizes",
            "1",
            *FAST,
        ]
    )
    assert code == 0
    header = stdout.splitlines()[0].split()
    assert header[:3] == ["batch", "ms", "IQR"] and "speedup" in header
    assert "per layer at batch size 1" in stdout
    assert "layer3.2.conv2" in stdout and "factorized ms" in stdout


def _fails(args: list[str], cli, needle: str) -> None:
    code, stdout, stderr = cli(args)
    assert code == 2
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1
    assert stderr.startswith("ht2") and needle in stderr


@pytest.mark.parametrize("sizes", ["0", "1,-4", "1,x", "", "2.5"])
def test_bad_batch_sizes(sizes: str, cli) -> None:
    _fails(["benchmark", "cifar10_resnet20", "--batch-sizes", sizes, *FAST], cli, sizes)


def test_cuda_without_a_gpu(monkeypatch: pytest.MonkeyPatch, cli) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _fails(["benchmark", "cifar10_resnet20", "--device", "cuda", *FAST], cli, "CUDA")


def test_against_a_model_of_another_input_size(compressed: Path, cli) -> None:
    _fails(
        ["benchmark", str(compressed), "--against", "resnet18", *FAST],
        cli,
        "input size",
    )


def test_per_layer_needs_a_compressed_model(cli) -> None:
    _fails(["benchmark", "cifar10_resnet20", "--per-layer", *FAST], cli, "--per-layer")


@pytest.mark.parametrize(
    ("flag", "value"), [("--repeats", "0"), ("--warmup", "-1"), ("--threads", "0")]
)
def test_bad_counts(flag: str, value: str, cli) -> None:
    _fails(["benchmark", "cifar10_resnet20", flag, value], cli, flag)


@pytest.fixture(scope="module")
def onnx_file(compressed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compressed ResNet-20, BatchNorms folded, exported by `ht2 export --format onnx`."""
    out = tmp_path_factory.mktemp("onnx") / "r20"
    with num_threads(1):
        code = main(["export", str(compressed), "--fold-bn", "--format", "onnx", "--out", str(out)])
    assert code == 0
    return out / "model.onnx"


@pytest.mark.parametrize("threads", [1, 2])
def test_onnxruntime_is_pinned_to_the_thread_count(onnx_file: Path, threads: int) -> None:
    runner = OrtRunner(onnx_file, threads=threads)
    options = runner.session.get_session_options()
    assert options.intra_op_num_threads == threads == runner.threads
    assert options.inter_op_num_threads == 1


def test_onnx_of_another_input_size(onnx_file: Path, cli) -> None:
    _fails(["benchmark", "resnet18", "--onnx", str(onnx_file), *FAST], cli, "takes inputs of")


def test_onnx_file_missing(compressed: Path, tmp_path: Path, cli) -> None:
    missing = str(tmp_path / "none.onnx")
    _fails(["benchmark", str(compressed), "--onnx", missing, *FAST], cli, "none.onnx")


@pytest.fixture(scope="module")
def folded_dir(compressed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compressed ResNet-20 with its BatchNorms folded, by `ht2 export --fold-bn`."""
    out = tmp_path_factory.mktemp("folded") / "r20"
    with num_threads(1):
        assert main(["export", str(compressed), "--fold-bn", "--out", str(out)]) == 0
    return out


def _json(args: list[str], cli) -> dict:
    code, stdout, stderr = cli([*args, "--json", *FAST])
    assert code == 0, stderr
    return json.loads(stdout)


def _observe(prepared, x: torch.Tensor) -> dict:
    """What a prepared model really does: BatchNorms left, weight layout, output dtype, and
    what runs it."""
    module = prepared.module
    conv = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    with torch.inference_mode():
        output = prepared(x)
    return {
        "treatment": prepared.treatment,
        "batchnorms": sum(isinstance(m, nn.BatchNorm2d) for m in module.modules()),
        "channels_last": conv.weight.is_contiguous(memory_format=torch.channels_last),
        "dtype": output.dtype,
        "runner": type(prepared.run).__name__,
    }


def test_the_baseline_gets_the_treatment_of_the_model(
    folded_dir: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    from ht2.metrics import treatment

    seen: list[dict] = []
    real = treatment.treat

    def recording(model, how, *args, **kwargs):
        prepared = real(model, how, *args, **kwargs)
        seen.append(_observe(prepared, torch.randn(1, 3, 32, 32)))
        return prepared

    monkeypatch.setattr(treatment, "treat", recording)
    args = ["benchmark", str(folded_dir), "--against", "cifar10_resnet20", "--batch-sizes", "1"]
    result = _json([*args, "--channels-last", "--dtype", "bfloat16"], cli)
    ours, theirs = seen
    assert ours == theirs
    assert ours["batchnorms"] == 0 and ours["channels_last"] and ours["dtype"] == torch.bfloat16
    assert ours["treatment"].fold_bn  # the folder came folded: the baseline was folded too
    assert result["matched"] and result["treatment"] == result["baseline_treatment"]
    assert result["treatment"] == {
        "dtype": "bfloat16",
        "memory_format": "channels_last",
        "runtime": "eager",
        "fold_bn": True,
    }
    assert result["folded_bn"] == result["baseline_folded_bn"] == 19


def test_fold_bn_folds_both_unfolded_models(compressed: Path, cli) -> None:
    args = ["benchmark", str(compressed), "--against", "cifar10_resnet20", "--batch-sizes", "1"]
    plain = _json(args, cli)
    assert not plain["treatment"]["fold_bn"] and plain["folded_bn"] == 0
    assert plain["baseline_folded_bn"] == 0
    folded = _json([*args, "--fold-bn"], cli)
    assert folded["treatment"]["fold_bn"] and folded["baseline_treatment"]["fold_bn"]
    assert folded["folded_bn"] == folded["baseline_folded_bn"] == 19


def test_json_rows_state_the_mac_reduction_and_realized_share(compressed: Path, cli) -> None:
    args = ["benchmark", str(compressed), "--against", "cifar10_resnet20", "--batch-sizes", "1,2"]
    result = _json(args, cli)
    assert {"treatment", "baseline_treatment", "matched", "macs", "baseline_macs"} <= set(result)
    for row in result["rows"]:
        assert row["mac_reduction"] == pytest.approx(result["baseline_macs"] / result["macs"])
        assert row["realized_over_mac"] == pytest.approx(row["speedup"] / row["mac_reduction"])


def test_the_table_states_the_treatment(compressed: Path, cli) -> None:
    args = ["benchmark", str(compressed), "--against", "cifar10_resnet20", "--batch-sizes", "1"]
    code, stdout, _ = cli([*args, "--channels-last", *FAST])
    assert code == 0
    assert "realized/MAC" in stdout.splitlines()[0]
    assert "both models (like for like): float32, NHWC, eager, BatchNorms unfolded" in stdout


def test_unmatched_baseline_runs_as_loaded_and_says_so(folded_dir: Path, cli) -> None:
    args = ["benchmark", str(folded_dir), "--against", "cifar10_resnet20", "--batch-sizes", "1"]
    args += ["--channels-last", "--unmatched-baseline"]
    result = _json(args, cli)
    assert result["matched"] is False and result["baseline_folded_bn"] == 0
    assert result["baseline_treatment"] == {
        "dtype": "float32",
        "memory_format": "contiguous",
        "runtime": "eager",
        "fold_bn": False,
    }
    code, stdout, _ = cli([*args, *FAST])
    assert code == 0 and "UNMATCHED (--unmatched-baseline)" in stdout


def test_matrix_times_every_treatment_and_marks_the_pairs(compressed: Path, cli) -> None:
    args = ["benchmark", str(compressed), "--against", "cifar10_resnet20", "--batch-sizes", "1"]
    args += ["--matrix", "--runtime", "eager", "--dtype", "float32"]
    result = _json(args, cli)
    rows = result["rows"]
    seen = {(r["treatment"]["memory_format"], r["treatment"]["fold_bn"]) for r in rows}
    assert len(rows) == 4 and len(seen) == 4
    assert all(row["treatment"] == row["baseline_treatment"] for row in rows)
    fastest = [row for row in rows if "fastest like-for-like pair" in row["marks"]]
    assert fastest == [min(rows, key=lambda row: row["latency_ms"])]
    theirs = min(rows, key=lambda row: row["baseline_latency_ms"])
    assert "baseline's fastest" in theirs["marks"]
    (best,) = result["best"]
    pair = best["best_against_best"]
    assert pair["treatment"] == fastest[0]["treatment"]
    assert pair["baseline_treatment"] == theirs["treatment"]
    assert pair["speedup"] == pytest.approx(
        theirs["baseline_latency_ms"] / fastest[0]["latency_ms"]
    )
    assert best["fastest_like_for_like"]["speedup"] == fastest[0]["speedup"]
    code, stdout, _ = cli([*args, "--matrix", "--runtime", "eager", "--dtype", "float32", *FAST])
    assert code == 0 and "best against best" in stdout and "mark" in stdout.splitlines()[0]


def test_onnxruntime_runs_both_models_exported(compressed: Path, cli) -> None:
    args = ["benchmark", str(compressed), "--against", "cifar10_resnet20", "--batch-sizes", "1,3"]
    result = _json([*args, "--runtime", "onnxruntime"], cli)
    assert result["treatment"]["runtime"] == result["baseline_treatment"]["runtime"]
    assert result["treatment"]["runtime"] == "onnxruntime" and result["onnxruntime_threads"] == 1
    for row in result["rows"]:
        assert row["latency_ms"] > 0 and row["baseline_latency_ms"] > 0


def test_an_onnx_file_folded_by_export_folds_the_baseline(
    compressed: Path, onnx_file: Path, cli
) -> None:
    args = ["benchmark", str(compressed), "--against", "cifar10_resnet20", "--batch-sizes", "2"]
    result = _json([*args, "--onnx", str(onnx_file)], cli)
    assert result["onnx"] == str(onnx_file) and result["treatment"]["runtime"] == "onnxruntime"
    assert result["treatment"] == result["baseline_treatment"]
    assert result["treatment"]["fold_bn"] and result["baseline_folded_bn"] == 19


def test_onnxruntime_missing_names_the_extra(
    compressed: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    args = ["benchmark", str(compressed), "--runtime", "onnxruntime", "--batch-sizes", "1"]
    _fails([*args, *FAST], cli, "pip install 'ht2[onnx]'")


def test_openvino_runs_both_models_exported(compressed: Path, cli) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'ht2[openvino]'")
    args = ["benchmark", str(compressed), "--against", "cifar10_resnet20", "--batch-sizes", "1,3"]
    result = _json([*args, "--runtime", "openvino"], cli)
    assert result["treatment"] == result["baseline_treatment"]
    assert result["treatment"]["runtime"] == "openvino" and result["openvino_threads"] == 1
    assert [row["batch_size"] for row in result["rows"]] == [1, 3]
    for row in result["rows"]:
        assert row["latency_ms"] > 0 and row["baseline_latency_ms"] > 0


def test_openvino_missing_names_the_extra(
    compressed: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    args = ["benchmark", str(compressed), "--runtime", "openvino", "--batch-sizes", "1"]
    _fails([*args, *FAST], cli, "pip install 'ht2[openvino]'")


def test_the_matrix_notes_a_runtime_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from ht2.metrics.like_for_like import treatment_matrix

    monkeypatch.setitem(sys.modules, "openvino", None)
    treatments, notes = treatment_matrix(torch.device("cpu"), dtype="float32")
    assert treatments and all(t.runtime != "openvino" for t in treatments)
    assert notes == ["openvino left out: not installed (pip install 'ht2[openvino]')"]


def test_a_float16_onnx_file_is_refused(compressed: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "fp16"
    code, _, _ = cli(
        ["export", str(compressed), "--format", "onnx", "--dtype", "float16", "--out", str(out)]
    )
    assert code == 0
    args = ["benchmark", str(compressed), "--onnx", str(out / "model.onnx"), "--batch-sizes", "1"]
    _fails([*args, *FAST], cli, "float16 graph")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--runtime", "onnx"], "invalid choice: 'onnx'"),
        (["--dtype", "float16"], "invalid choice: 'float16'"),
        (["--runtime", "onnxruntime", "--dtype", "bfloat16"], "float32 graph"),
        (["--runtime", "onnxruntime", "--channels-last"], "memory layout"),
        (["--runtime", "openvino", "--channels-last"], "memory layout"),
        (["--runtime", "tensorrt"], "invalid choice: 'tensorrt'"),
        (["--runtime", "openvino", "--onnx", "m.onnx"], "drop --runtime openvino"),
        (["--runtime", "eager", "--onnx", "m.onnx"], "drop --runtime eager"),
        (["--unmatched-baseline"], "--against"),
        (["--matrix", "--per-layer"], "drop --per-layer"),
    ],
)
def test_bad_treatments_are_one_line(extra: list[str], needle: str, cli) -> None:
    _fails(["benchmark", "cifar10_resnet20", "--batch-sizes", "1", *extra, *FAST], cli, needle)


def test_emulated_bfloat16_is_a_warning(
    compressed: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    from ht2.metrics import treatment

    monkeypatch.setattr(treatment, "native_bfloat16", lambda device: False)
    args = ["benchmark", str(compressed), "--dtype", "bfloat16", "--batch-sizes", "1"]
    code, stdout, stderr = cli([*args, "--json", *FAST])
    assert code == 0 and json.loads(stdout)["bfloat16_emulated"] is True
    assert "emulated" in stderr and "no native bfloat16" in stderr


def test_per_layer_times_in_the_treatment(compressed: Path, cli) -> None:
    args = ["benchmark", str(compressed), "--per-layer", "--batch-sizes", "2"]
    result = _json([*args, "--dtype", "bfloat16", "--channels-last"], cli)
    assert result["layers"] and all(layer["factorized_ms"] > 0 for layer in result["layers"])
