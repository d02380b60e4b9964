"""The names users choose among (methods, rules, allocators, schedules), kept free of torch so
that the command line can list them in `--help` without importing it."""

from __future__ import annotations

from ht2.layers.registry import kxk_methods

# What k x k convs get (see surgery.policy): the methods ht2.layers.registry registers with a
# k x k name, as the package ships them; kxk_methods() lists those registered since too.
METHODS = kxk_methods()
# Former names of a method, still accepted: each warns (RenamedWarning), then acts as the
# method it maps to. Not the layer kinds of a plan: there "svd" is Tucker-1 / Linear SVD.
METHOD_ALIASES = {"svd": "spatial-svd"}


def method_names() -> tuple[str, ...]:
    """What --method accepts: every registered k x k method, then the former names."""
    return (*kxk_methods(), *METHOD_ALIASES)


RANK_RULES = ("energy", "vbmf")
ALLOCATIONS = ("uniform", "spectrum", "sensitivity")
SENSITIVITY_ENERGIES = (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
SCHEDULES = ("onecycle", "multistep", "step", "constant")
AMP_NAMES = ("bf16", "fp16")
DEFAULT_OPSET = 17
DTYPES = ("float32", "bfloat16")  # bfloat16: run under autocast, weights kept in float32
RUNTIMES = ("eager", "compile", "onnxruntime", "openvino")
EXPORTED_RUNTIMES = ("onnxruntime", "openvino")  # runtimes that run an ONNX export on the CPU
ONNX_DTYPES = ("float32", "float16", "bfloat16")  # what `ht2 export --dtype` accepts
# What ONNX Runtime's CPU provider executes: it has float16 kernels (or casts around them) but
# no bfloat16 Conv kernel, so a bfloat16 graph (valid ONNX from opset 22) does not load.
ORT_CPU_DTYPES = ("float32", "float16")
FORM_RUNTIMES = ("eager", "compile")  # runtimes --latency-aware can time forms in


def layout_name(memory_format: str | None) -> str:
    """How tables name a memory format: NHWC for "channels_last", else NCHW."""
    return "NHWC" if memory_format == "channels_last" else "NCHW"


def treatment_phrase(treatment: dict) -> str:
    """'bfloat16, NHWC, eager, BatchNorms folded': a treatment's JSON record in one phrase."""
    folded = "folded" if treatment["fold_bn"] else "unfolded"
    layout = layout_name(treatment["memory_format"])
    return f"{treatment['dtype']}, {layout}, {treatment['runtime']}, BatchNorms {folded}"


class HT2Warning(UserWarning):
    """Something worth knowing about a result that ht2 still produced; the CLI prints it as
    one `ht2: warning:` line once the command succeeds."""


class RenamedWarning(FutureWarning):
    """A name the user gave was renamed; the old one still works, for now, as the new one."""
