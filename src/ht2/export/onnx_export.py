"""Write a model as ONNX (dynamic batch size, float32 or float16), check the file, and compare
it with PyTorch in the same dtype."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ht2.choices import DEFAULT_OPSET, ORT_CPU_DTYPES
from ht2.errors import HT2Error
from ht2.export.ort import OrtRunner, require_onnx, require_onnx_writer

CHECK_BATCH_SIZES = (1, 4)
# Max |ORT - PyTorch| over the largest |output|, per dtype: float32 rounds at ~1e-7 per
# operation (differences of ~1e-6 seen), float16 at ~5e-4 (its machine epsilon ~1e-3), and
# the two sides sum in different orders, so float16 gets ten epsilons.
AGREEMENT = {"float32": 1e-4, "float16": 1e-2}


@dataclass(frozen=True)
class OnnxCheck:
    """How ONNX Runtime's outputs compared with PyTorch's on random inputs."""

    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    max_abs_output: float
    tolerance: float
    dtype: str
    onnx_version: str
    onnxruntime_version: str
    opset: int

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_output, 1e-12)

    def to_dict(self) -> dict:
        return {**asdict(self), "relative_diff": self.relative_diff}


def supported_opsets() -> tuple[int, int]:
    """The lowest and highest ONNX opset this torch's TorchScript-based exporter writes."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET, ONNX_MIN_OPSET
    except ImportError:  # a private module; without it, let the exporter judge
        return 1, 10**6
    return int(ONNX_MIN_OPSET), int(ONNX_MAX_OPSET)


def check_onnx_dtype(dtype: str) -> torch.dtype:
    """The torch dtype for `dtype`, or a one-line error unless ONNX Runtime's CPU provider
    runs graphs in it (float32 and float16; it has no bfloat16 Conv kernel)."""
    if dtype not in ORT_CPU_DTYPES:
        raise HT2Error(
            f"dtype must be one of {', '.join(ORT_CPU_DTYPES)} (what ONNX Runtime's CPU provider "
            f"runs), got {dtype!r}",
            params="dtype",
        )
    return getattr(torch, dtype)


def in_dtype(model: nn.Module, dtype: str) -> nn.Module:
    """`model` on the CPU in eval mode with weights in `dtype`: itself for float32, else a copy."""
    model = model.cpu().eval()
    torch_dtype = check_onnx_dtype(dtype)
    return model if torch_dtype == torch.float32 else copy.deepcopy(model).to(torch_dtype)


@contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Standard output (the file descriptor too) sent to the null device: the TorchScript
    exporter prints the whole graph there, hundreds of lines, when it refuses an opset."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(io.StringIO()):
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def export_onnx(
    model: nn.Module,
    input_size: tuple[int, ...],
    path: Path,
    opset: int = DEFAULT_OPSET,
    dtype: str = "float32",
) -> None:
    """Write `model` (eval mode, on CPU, weights and activations in `dtype`) to `path` with
    input "input", output "output" and a dynamic batch dimension; the TorchScript-based
    exporter, so no onnxscript is needed. `model` itself is left in its dtype."""
    require_onnx_writer()
    low, high = supported_opsets()
    if not low <= opset <= high:
        raise HT2Error(
            f"opset must be between {low} and {high} for torch {torch.__version__}, got {opset}"
        )
    model = in_dtype(model, dtype)
    example = torch.zeros(1, *input_size, dtype=check_onnx_dtype(dtype))
    try:
        with warnings.catch_warnings(), _stdout_silenced():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
            )
    except Exception as error:  # the exporter raises many types; keep the first line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HT2Error(f"torch.onnx.export failed for this model: {first}") from None


def check_onnx(
    model: nn.Module,
    path: Path,
    input_size: tuple[int, ...],
    opset: int = DEFAULT_OPSET,
    threads: int | None = None,
    dtype: str = "float32",
) -> OnnxCheck:
    """Run onnx.checker on `path`, then ONNX Runtime and `model` in `dtype` on the same random
    inputs; an HT2Error when they disagree by more than AGREEMENT[dtype] of the largest output."""
    onnx, ort = require_onnx()
    model = in_dtype(model, dtype)
    tolerance = AGREEMENT[dtype]
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as error:
        raise HT2Error(f"{path} fails onnx.checker: {str(error).splitlines()[0]}") from None
    runner = OrtRunner(path, threads)
    generator = torch.Generator().manual_seed(0)
    max_diff, max_out = 0.0, 0.0
    for size in CHECK_BATCH_SIZES:
        x = torch.randn(size, *input_size, generator=generator).to(check_onnx_dtype(dtype))
        with torch.no_grad():
            expected = model(x)
        if not isinstance(expected, torch.Tensor):
            raise HT2Error("the model returns more than one tensor; ONNX export takes one output")
        found, expected = runner(x).float(), expected.float()
        if found.shape != expected.shape:
            raise HT2Error(
                f"ONNX Runtime gave shape {tuple(found.shape)}, PyTorch {tuple(expected.shape)}"
            )
        max_diff = max(max_diff, (found - expected).abs().max().item())
        max_out = max(max_out, expected.abs().max().item())
    check = OnnxCheck(
        CHECK_BATCH_SIZES,
        max_diff,
        max_out,
        tolerance,
        dtype,
        onnx.__version__,
        ort.__version__,
        opset,
    )
    if check.relative_diff > tolerance:
        raise HT2Error(
            f"ONNX Runtime disagrees with PyTorch in {dtype} by up to {max_diff:.3g} (largest "
            f"output {max_out:.3g}, relative {check.relative_diff:.2g} > {tolerance:g}); "
            "nothing written"
        )
    return check
