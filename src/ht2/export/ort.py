"""ONNX Runtime, loaded only when asked for: a session pinned to a thread count, run on tensors."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ht2.errors import HT2Error

INSTALL_HINT = "pip install 'ht2[onnx]'"
INPUT_DTYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}


def require_onnx() -> tuple[ModuleType, ModuleType]:
    """The onnx and onnxruntime modules, or a one-line error saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise HT2Error(
            f"ONNX needs the onnx and onnxruntime packages ({error.name} is missing): "
            f"{INSTALL_HINT}"
        ) from None
    return onnx, onnxruntime


def require_onnx_writer() -> ModuleType:
    """The onnx module, all that writing a graph needs (OpenVINO reads it without
    onnxruntime), or a one-line error saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise HT2Error(f"ONNX export needs the onnx package: {INSTALL_HINT}") from None
    return onnx


class OrtRunner:
    """An ONNX Runtime CPU session called like a model: a float tensor in (converted to the
    graph's input dtype, float32 or float16, inside the call), the first output out.

    Intra-op threads are pinned to `threads` (PyTorch's count by default) and do not spin
    between runs, so timing it in turn with PyTorch models compares like with like.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        _, ort = require_onnx()
        if not Path(path).is_file():
            raise HT2Error(f"{path} is not a file; give an .onnx file written by `ht2 export`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            raise HT2Error(f"ONNX Runtime cannot load {path}: {first}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise HT2Error(f"{path} takes {len(inputs)} inputs; give a model with one image input")
        if inputs[0].type not in INPUT_DTYPES:
            raise HT2Error(f"{path} takes {inputs[0].type} inputs; give a float32 or float16 graph")
        self.input_name = inputs[0].name
        self.dtype: torch.dtype = INPUT_DTYPES[inputs[0].type]
        self.input_shape: list[Any] = list(inputs[0].shape)
        self.threads = options.intra_op_num_threads

    def check_input(self, batch_size: int, input_size: tuple[int, ...], path: str) -> None:
        """A one-line error unless a batch of `batch_size` inputs of `input_size` fits."""
        wanted = [batch_size, *input_size]
        fits = len(self.input_shape) == len(wanted) and all(
            not isinstance(have, int) or have == want
            for have, want in zip(self.input_shape, wanted, strict=True)
        )
        if not fits:
            raise HT2Error(
                f"{path} takes inputs of shape {self.input_shape}, not {wanted}; export it with "
                "`ht2 export DIR --format onnx` (dynamic batch size) from a model of that size"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", self.dtype).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])
