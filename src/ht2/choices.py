"""The names users choose among (methods, rules, allocators, schedules), kept free of torch so
that the command line can list them in `--help` without importing it."""

from __future__ import annotations

METHODS = ("ht2", "tucker2", "cp", "svd")
RANK_RULES = ("energy", "vbmf")
ALLOCATIONS = ("uniform", "spectrum", "sensitivity")
SENSITIVITY_ENERGIES = (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
SCHEDULES = ("onecycle", "multistep", "step", "constant")
AMP_NAMES = ("bf16", "fp16")
DEFAULT_OPSET = 17
DTYPES = ("float32", "bfloat16")  # bfloat16: run under autocast, weights kept in float32
RUNTIMES = ("eager", "compile", "onnxruntime")
FORM_RUNTIMES = ("eager", "compile")  # runtimes --latency-aware can time forms in
