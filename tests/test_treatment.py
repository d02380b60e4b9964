"""Treatments: what `treat` does to a copy of a model, and which combinations can run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.metrics import num_threads
from ht2.metrics.treatment import (
    Treatment,
    all_treatments,
    native_bfloat16,
    prime,
    treat,
    warn_if_emulated,
)
from tests._shared import rel_error

CPU = torch.device("cpu")
INPUT = (3, 10, 10)


def _tiny() -> nn.Module:
    """conv -> BatchNorm -> ReLU -> pool -> linear, with BatchNorm statistics that matter."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("treatment", all_treatments(CPU, runtimes=("eager",)))
def test_every_eager_treatment_computes_what_the_model_does(treatment: Treatment) -> None:
    model = _tiny()
    x = torch.randn(2, *INPUT)
    with torch.no_grad():
        expected = model(x)
    prepared = treat(model, treatment, CPU, INPUT)
    with torch.inference_mode():
        found = prepared(x)
    assert found.dtype == (torch.bfloat16 if treatment.dtype == "bfloat16" else torch.float32)
    assert rel_error(found, expected) < (3e-2 if treatment.dtype == "bfloat16" else 1e-5)
    assert prepared.folded == (1 if treatment.fold_bn else 0)
    assert isinstance(model[1], nn.BatchNorm2d) and model[0].weight.is_contiguous()  # untouched
    conv = prepared.module[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == treatment.channels_last


def test_onnxruntime_treatment_runs_the_exported_model(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    model = _tiny()
    x = torch.randn(3, *INPUT)
    prepared = treat(model, Treatment(runtime="onnxruntime"), CPU, INPUT, tmp_path, threads=1)
    assert prepared.module is None and (tmp_path / "model.onnx").is_file()
    with torch.no_grad():
        assert rel_error(prepared(x), model(x)) < 1e-5


@pytest.mark.parametrize("native", [False, True])
def test_the_matrix_leaves_out_what_onnxruntime_and_openvino_cannot_run(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ht2.metrics import treatment

    monkeypatch.setattr(treatment, "native_bfloat16", lambda device: native)
    treatments = all_treatments(CPU)
    assert len(treatments) == len(set(treatments)) == 2 * 2 * 2 * 2 + 2 + 2 * (1 + native)
    onnx = [t for t in treatments if t.runtime == "onnxruntime"]
    assert {(t.dtype, t.channels_last) for t in onnx} == {("float32", False)}
    openvino = {(t.dtype, t.channels_last) for t in treatments if t.runtime == "openvino"}
    assert openvino == {("float32", False), *([("bfloat16", False)] if native else [])}
    on_cuda = all_treatments(torch.device("cuda"))
    assert all(t.runtime not in ("onnxruntime", "openvino") for t in on_cuda)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_openvino_treatment_agrees_with_pytorch(dtype: str, tmp_path) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'ht2[openvino]'")
    if dtype == "bfloat16" and not native_bfloat16(CPU):
        pytest.skip("OpenVINO computes in bfloat16 only on CPUs with AVX-512 BF16 or AMX")
    model = _tiny()
    x = torch.randn(3, *INPUT)
    how = Treatment(dtype=dtype, runtime="openvino", fold_bn=True)
    prepared = treat(model, how, CPU, INPUT, tmp_path, threads=1)
    assert prepared.module is None and prepared.folded == 1 and (tmp_path / "model.onnx").is_file()
    assert prepared.run.dtype == dtype and prepared.run.threads == 1
    found = prepared(x)
    with torch.no_grad():
        expected = model(x)
    rtol, atol = (1e-5, 1e-5) if dtype == "float32" else (3e-2, 3e-2)
    assert found.dtype == torch.float32 and torch.allclose(found, expected, rtol=rtol, atol=atol)
    kept = found.clone()
    prepared(2 * x)
    assert torch.equal(found, kept)  # the next run leaves this output alone


class _FailingOpenVino:
    """A stand-in for the openvino module whose compile or property read raises `error`."""

    def __init__(self, error: Exception, when: str) -> None:
        self.error, self.when = error, when

    def Core(self) -> _FailingOpenVino:  # noqa: N802  (openvino's name)
        return self

    def read_model(self, path: str) -> str:
        return path

    def compile_model(self, model: str, device: str, config: dict) -> _FailingOpenVino:
        if self.when == "compile":
            raise self.error
        return self

    def get_property(self, name: str) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "when", "shown"),
    [
        (RuntimeError(""), "compile", "RuntimeError"),
        (ValueError("no such property\nat line 2"), "property", "no such property"),
    ],
)
def test_an_openvino_error_is_one_line_naming_it(
    error: Exception, when: str, shown: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ht2.export import openvino_runtime

    fake = _FailingOpenVino(error, when)
    monkeypatch.setattr(openvino_runtime, "require_openvino", lambda: fake)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    with pytest.raises(HT2Error) as raised:
        openvino_runtime.OpenVinoRunner(path, threads=1)
    assert str(raised.value) == f"OpenVINO cannot compile {path} for the CPU: {shown}"


@pytest.mark.parametrize(
    ("fields", "needle"),
    [({"dtype": "float16"}, "dtype must be one of"), ({"runtime": "tvm"}, "runtime must be")],
)
def test_unknown_dtype_or_runtime_is_refused(fields: dict, needle: str) -> None:
    with pytest.raises(HT2Error, match=needle):
        Treatment(**fields)


def test_a_failing_run_is_one_line_naming_the_treatment() -> None:
    prepared = treat(nn.Linear(4, 2), Treatment(), CPU)
    with pytest.raises(HT2Error, match="broken failed to run as float32, NCHW, eager"):
        prime([prepared], torch.zeros(1, 5), ["broken"])


def test_emulated_bfloat16_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    from ht2.metrics import treatment

    assert isinstance(native_bfloat16(CPU), bool)
    monkeypatch.setattr(treatment, "native_bfloat16", lambda device: False)
    with pytest.warns(UserWarning, match="emulated"):
        assert warn_if_emulated("bfloat16", CPU)
    assert not warn_if_emulated("float32", CPU)


@pytest.mark.slow
def test_compile_treatment_computes_what_the_model_does() -> None:
    model = _tiny()
    x = torch.randn(2, *INPUT)
    with num_threads(1):
        prepared = treat(model, Treatment(runtime="compile", fold_bn=True), CPU, INPUT)
        prime([prepared], x, ["tiny"])
        with torch.inference_mode():
            found = prepared(x)
    with torch.no_grad():
        assert rel_error(found, model(x)) < 1e-5


def test_every_compiled_model_of_a_matrix_is_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dynamo compiles the shared Treated.forward once per model; past its recompile limit (8)
    it would run the rest eagerly without a word."""
    import torch._dynamo

    config = torch._dynamo.config
    monkeypatch.setattr(config, "recompile_limit", config.recompile_limit)
    monkeypatch.setattr(config, "accumulated_recompile_limit", config.accumulated_recompile_limit)
    graphs: list[object] = []

    def backend(graph: torch.fx.GraphModule, inputs: list) -> object:
        graphs.append(graph)
        return graph.forward

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: real(model, backend=backend))
    torch._dynamo.reset()
    try:
        x = torch.randn(2, *INPUT)
        for i in range(12):  # twelve model classes, as a compressed and an original model differ
            model = _tiny()
            model.__class__ = type(f"Tiny{i}", (nn.Sequential,), {})
            prepared = treat(model, Treatment(runtime="compile"), CPU, INPUT)
            with torch.inference_mode():
                prepared(x)
        assert len(graphs) == 12
    finally:
        torch._dynamo.reset()
