"""Write a model as ONNX (dynamic batch size), check the file, and compare it with PyTorch."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ht2.choices import DEFAULT_OPSET
from ht2.errors import HT2Error
from ht2.export.ort import OrtRunner, require_onnx

CHECK_BATCH_SIZES = (1, 4)
AGREEMENT = 1e-4  # max |ORT - PyTorch| over the largest |output|: float32 rounding is ~1e-6


@dataclass(frozen=True)
class OnnxCheck:
    """How ONNX Runtime's outputs compared with PyTorch's on random inputs."""

    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    max_abs_output: float
    tolerance: float
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


def export_onnx(
    model: nn.Module, input_size: tuple[int, ...], path: Path, opset: int = DEFAULT_OPSET
) -> None:
    """Write `model` (eval mode, on CPU) to `path` with input "input", output "output" and a
    dynamic batch dimension; the TorchScript-based exporter, so no onnxscript is needed."""
    require_onnx()
    low, high = supported_opsets()
    if not low <= opset <= high:
        raise HT2Error(
            f"opset must be between {low} and {high} for torch {torch.__version__}, got {opset}"
        )
    model = model.cpu().eval()
    example = torch.zeros(1, *input_size)
    try:
        with warnings.catch_warnings():
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
) -> OnnxCheck:
    """Run onnx.checker on `path`, then ONNX Runtime and `model` on the same random inputs;
    an HT2Error when they disagree by more than AGREEMENT of the largest output."""
    onnx, ort = require_onnx()
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as error:
        raise HT2Error(f"{path} fails onnx.checker: {str(error).splitlines()[0]}") from None
    runner = OrtRunner(path, threads)
    generator = torch.Generator().manual_seed(0)
    max_diff, max_out = 0.0, 0.0
    model = model.cpu().eval()
    for size in CHECK_BATCH_SIZES:
        x = torch.randn(size, *input_size, generator=generator)
        with torch.no_grad():
            expected = model(x)
        if not isinstance(expected, torch.Tensor):
            raise HT2Error("the model returns more than one tensor; ONNX export takes one output")
        found = runner(x)
        if found.shape != expected.shape:
            raise HT2Error(
                f"ONNX Runtime gave shape {tuple(found.shape)}, PyTorch {tuple(expected.shape)}"
            )
        max_diff = max(max_diff, (found - expected).abs().max().item())
        max_out = max(max_out, expected.abs().max().item())
    check = OnnxCheck(
        CHECK_BATCH_SIZES, max_diff, max_out, AGREEMENT, onnx.__version__, ort.__version__, opset
    )
    if check.relative_diff > AGREEMENT:
        raise HT2Error(
            f"ONNX Runtime disagrees with PyTorch by up to {max_diff:.3g} (largest output "
            f"{max_out:.3g}, relative {check.relative_diff:.2g} > {AGREEMENT:g}); nothing written"
        )
    return check
