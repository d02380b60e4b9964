"""How a model runs while it is timed: dtype, memory format, runtime and BatchNorm folding.

A speedup means something only when both sides ran alike. A `Treatment` names one way of
running a model; `treat` applies it to a copy of any model, so that a benchmark can give the
model under test and its baseline the very same one (and `--matrix` every one there is).
"""

from __future__ import annotations

import copy
import itertools
import platform
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ht2.choices import DTYPES, EXPORTED_RUNTIMES, RUNTIMES, layout_name
from ht2.errors import HT2Error
from ht2.io.folds import folds_of
from ht2.metrics.latency import Runnable, time_models

X86 = ("x86_64", "amd64", "i386", "i686")
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


@dataclass(frozen=True)
class Treatment:
    """One way of running a model: `dtype` ("bfloat16" runs under autocast, weights stay
    float32; in OpenVINO it is the inference precision), channels_last memory format or not,
    the runtime ("eager" PyTorch, "compile": torch.compile, "onnxruntime" or "openvino":
    exported to ONNX and run on the CPU) and whether the BatchNorms that follow convs are
    folded into them first."""

    dtype: str = "float32"
    channels_last: bool = False
    runtime: str = "eager"
    fold_bn: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise HT2Error(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.runtime not in RUNTIMES:
            raise HT2Error(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")

    @property
    def memory_format(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "memory_format": self.memory_format,
            "runtime": self.runtime,
            "fold_bn": self.fold_bn,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Treatment:
        """The treatment back from its to_dict() form (as benchmark JSON records it)."""
        nhwc = data["memory_format"] == "channels_last"
        return cls(data["dtype"], nhwc, data["runtime"], data["fold_bn"])

    def cells(self) -> list[str]:
        """Table cells: dtype, memory format, runtime, BatchNorms."""
        layout = layout_name("channels_last" if self.channels_last else None)
        return [self.dtype, layout, self.runtime, "folded" if self.fold_bn else "unfolded"]

    def describe(self) -> str:
        """One phrase, as the footnotes of tables say it."""
        return ", ".join(self.cells()[:3]) + f", BatchNorms {self.cells()[3]}"


def unsupported(treatment: Treatment, device: torch.device) -> str | None:
    """Why `treatment` cannot run on `device`, or None when it can."""
    if treatment.runtime not in EXPORTED_RUNTIMES:
        return None
    runtime = RUNTIME_NAMES[treatment.runtime]
    if device.type != "cpu":
        return f"{runtime} runs on the CPU here"
    if treatment.runtime == "onnxruntime" and treatment.dtype != "float32":
        return "ONNX Runtime runs the exported float32 graph"
    if treatment.dtype == "bfloat16" and not native_bfloat16(device):
        return f"{runtime} computes in bfloat16 only on CPUs with AVX-512 BF16 or AMX"
    if treatment.channels_last:
        return f"{runtime} chooses its own memory layout"
    return None


def check_treatment(treatment: Treatment, device: torch.device) -> None:
    """A one-line error when `treatment` cannot run on `device`."""
    why = unsupported(treatment, device)
    if why is not None:
        raise HT2Error(f"{treatment.describe()} cannot run on {device}: {why}")


def all_treatments(
    device: torch.device,
    runtimes: Sequence[str] = RUNTIMES,
    folds: Sequence[bool] = (False, True),
) -> list[Treatment]:
    """Every combination of dtype, memory format, `runtimes` and `folds` that `device` runs."""
    combos = itertools.product(runtimes, DTYPES, (False, True), folds)
    treatments = [Treatment(dtype, nhwc, runtime, fold) for runtime, dtype, nhwc, fold in combos]
    return [t for t in treatments if unsupported(t, device) is None]


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively (not by converting to float32 and back):
    on CUDA as torch says; on x86 CPUs with AVX-512 BF16 or AMX; elsewhere as oneDNN says."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    if platform.machine().lower() in X86:
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    mkldnn_check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(mkldnn_check()) if mkldnn_check is not None else False


def warn_if_emulated(dtype: str, device: torch.device) -> bool:
    """Warn (and return True) when bfloat16 figures on `device` would be emulated."""
    if dtype != "bfloat16" or native_bfloat16(device):
        return False
    warnings.warn(
        f"this {device.type.upper()} has no native bfloat16 arithmetic: bfloat16 runs are "
        "emulated, so their speed says little about hardware that has it",
        stacklevel=2,
    )
    return True


def inner_input(shape: tuple[int, ...], treatment: Treatment, device: torch.device) -> torch.Tensor:
    """A random input of `shape` as a layer inside a treated model receives it: bfloat16
    under bfloat16 autocast (the previous layer's output), channels_last where 4-D, so that
    timing a layer alone does not time a conversion the model would not make."""
    x = torch.randn(shape, device=device)
    if treatment.dtype == "bfloat16" and treatment.runtime in ("eager", "compile"):
        x = x.to(torch.bfloat16)
    if treatment.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class Treated(nn.Module):
    """`model` run in a dtype and memory format: each input is converted on the way in (so
    the conversion is timed, as in deployment) and the forward runs under autocast."""

    def __init__(self, model: nn.Module, dtype: str = "float32", channels_last: bool = False):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> Any:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == "bfloat16":
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return self.model(x)
        return self.model(x)


@dataclass
class Prepared:
    """A model made ready under a treatment, called like a model on float32 NCHW batches.

    `module` is the PyTorch module that runs (None in ONNX Runtime and OpenVINO) and `folded`
    the number of BatchNorms folded into convs, by the treatment or before it.
    """

    run: Runnable
    treatment: Treatment
    module: nn.Module | None
    folded: int

    def __call__(self, x: torch.Tensor) -> Any:
        return self.run(x)


def treat(
    model: nn.Module,
    treatment: Treatment,
    device: torch.device | str = "cpu",
    input_size: tuple[int, ...] | None = None,
    workdir: Path | None = None,
    threads: int | None = None,
    name: str = "model",
) -> Prepared:
    """A copy of `model` (eval mode) running under `treatment` on `device`; `model` is left
    alone. Folding and ONNX export need the `input_size` of one sample; the ONNX file goes to
    `workdir` as NAME.onnx (a fresh temporary folder when None) and runs with `threads`."""
    device = torch.device(device)
    check_treatment(treatment, device)
    if treatment.fold_bn or treatment.runtime in EXPORTED_RUNTIMES:
        if input_size is None:
            raise HT2Error("folding BatchNorms and ONNX export need the input size of a sample")
    if treatment.fold_bn:
        from ht2.export import fold_batchnorms

        prepared, _ = fold_batchnorms(model, input_size)
    else:
        prepared = copy.deepcopy(model).eval()
    folded = len(folds_of(prepared))
    if treatment.runtime in EXPORTED_RUNTIMES:
        runner = _exported_runner(prepared, treatment, input_size, workdir, threads, name)
        return Prepared(runner, treatment, None, folded)
    prepared = prepared.to(device)
    if treatment.channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
    run: Runnable = Treated(prepared, treatment.dtype, treatment.channels_last).eval()
    if treatment.runtime == "compile":
        allow_recompiles()
        run = torch.compile(run)
    return Prepared(run, treatment, prepared, folded)


COMPILED_MODELS = 256  # compiled models one process may time (dynamo's own default: 8)


def allow_recompiles() -> None:
    """Let dynamo compile up to COMPILED_MODELS models in one process. Every compiled model
    runs through Treated.forward, which dynamo compiles once per model and caps at its
    recompile limit, beyond which it runs the frame eagerly without an error: a matrix of
    eight compile treatments of two models would time half of them uncompiled."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, COMPILED_MODELS)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, COMPILED_MODELS)


def _exported_runner(
    model: nn.Module,
    treatment: Treatment,
    input_size: tuple[int, ...],
    workdir: Path | None,
    threads: int | None,
    name: str,
) -> Runnable:
    """`model` exported (float32, dynamic batch) and loaded in an ONNX Runtime session, or
    compiled by OpenVINO with the treatment's dtype as its inference precision."""
    from ht2.export import OpenVinoRunner, OrtRunner, export_onnx, require_onnx, require_openvino

    if treatment.runtime == "openvino":
        require_openvino()
    else:
        require_onnx()
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="ht2-onnx-"))
    path = Path(workdir) / f"{name}.onnx"
    export_onnx(model, input_size, path)
    if treatment.runtime == "openvino":
        return OpenVinoRunner(path, threads, treatment.dtype)
    return OrtRunner(path, threads)


def prime(prepared: Sequence[Prepared], x: torch.Tensor, names: Sequence[str]) -> None:
    """Run each prepared model once on `x`, untimed: torch.compile compiles here, and any
    failure becomes a one-line error naming the model and its treatment."""
    with torch.inference_mode():
        for run, name in zip(prepared, names, strict=True):
            try:
                run(x)
            except HT2Error:
                raise
            except Exception as error:  # compilers and kernels raise many types
                text = str(error).strip()
                first = text.splitlines()[0] if text else type(error).__name__
                raise HT2Error(
                    f"{name} failed to run as {run.treatment.describe()}: {first}"
                ) from None


def time_in_turn(
    models: Sequence[nn.Module],
    x: torch.Tensor,
    treatment: Treatment,
    names: Sequence[str],
    threads: int | None = None,
    repeats: int = 20,
    warmup: int = 3,
    **treat_args: Any,
) -> list[float]:
    """Median ms of each of `models` on `x` under `treatment`: each made ready by treat() (with
    `treat_args`, such as input_size and workdir; exported files named model0, model1, ...),
    run once untimed (prime, with `names` in its errors), then timed run by run in turn."""
    prepared = [
        treat(model, treatment, x.device, threads=threads, name=f"model{i}", **treat_args)
        for i, model in enumerate(models)
    ]
    prime(prepared, x, names)
    return [t.median_ms for t in time_models(prepared, x, repeats, warmup, threads)]
