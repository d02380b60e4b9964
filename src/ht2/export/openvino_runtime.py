"""OpenVINO on the CPU, loaded only when asked for: an ONNX file compiled with a thread count
and an inference precision (float32, or bfloat16 where the CPU has it), run on tensors."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import torch

from ht2.errors import HT2Error
from ht2.export.signal_stack import kept_signal_stack

INSTALL_HINT = "pip install 'ht2[openvino]'"
PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}  # dtype -> INFERENCE_PRECISION_HINT


def require_openvino() -> ModuleType:
    """The openvino module (with onnx, which the export needs), or a one-line error saying how
    to install them."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes the graph OpenVINO reads)
        import openvino
    except ImportError as error:
        raise HT2Error(
            f"OpenVINO needs the onnx and openvino packages ({error.name} is missing): "
            f"{INSTALL_HINT}"
        ) from None
    return openvino


class OpenVinoRunner:
    """An ONNX file compiled by OpenVINO for the CPU, called like a model: a float32 tensor in,
    the first output (float32) out.

    `dtype` sets the inference precision hint ("bfloat16" computes in bfloat16 where the CPU
    has it, inputs and outputs stay float32); the compiled model is checked to have taken it.
    Threads are pinned to `threads` (PyTorch's count by default) and one stream runs, tuned
    for latency, so timing it in turn with PyTorch models compares like with like.
    """

    def __init__(
        self, path: str | os.PathLike, threads: int | None = None, dtype: str = "float32"
    ) -> None:
        ov = require_openvino()
        if dtype not in PRECISIONS:
            raise HT2Error(
                f"dtype must be one of {', '.join(PRECISIONS)} for OpenVINO, got {dtype!r}",
                params="dtype",
            )
        if not Path(path).is_file() or Path(path).suffix != ".onnx":
            raise HT2Error(f"{path} is not an .onnx file; give one written by `ht2 export`")
        self.threads = threads or torch.get_num_threads()
        self.dtype = dtype
        with kept_signal_stack():  # OpenVINO's own must not outlive its models: see signal_stack
            self.request = self._compile(ov, path)

    def _compile(self, ov: ModuleType, path: str | os.PathLike):
        """The infer request of `path` compiled for the CPU, its precision checked."""
        dtype = self.dtype
        config = {
            "INFERENCE_PRECISION_HINT": PRECISIONS[dtype],
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        }
        try:
            core = ov.Core()
            compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
            taken = compiled.get_property("INFERENCE_PRECISION_HINT")
            taken_name = taken.get_type_name()
        except Exception as error:  # OpenVINO raises its own untyped errors
            text = str(error).strip()
            first = text.splitlines()[0] if text else type(error).__name__
            raise HT2Error(f"OpenVINO cannot compile {path} for the CPU: {first}") from None
        if taken_name != PRECISIONS[dtype]:
            raise HT2Error(
                f"OpenVINO compiled {path} in {taken}, not {dtype}: this CPU lacks {dtype}"
            )
        if len(compiled.inputs) != 1:
            raise HT2Error(f"{path} takes {len(compiled.inputs)} inputs; give one image input")
        return compiled.create_infer_request()

    def __del__(self) -> None:
        with kept_signal_stack():
            self.__dict__.pop("request", None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.request.infer({0: array})[0])
