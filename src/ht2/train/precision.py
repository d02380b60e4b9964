"""How a training step computes: the autocast dtype and the memory format, per device.

The defaults ("auto") are what measured fastest without hurting the loss
(benchmarks/train_speed.py, BENCHMARKS.md): on a CPU with native bfloat16 (AVX-512 BF16 or
AMX), bfloat16 autocast and channels_last; on other CPUs channels_last in float32; on CUDA,
float32 in NCHW as before (not measured here). float16 needs a GradScaler and runs on CUDA only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ht2.metrics.treatment import native_bfloat16

AUTO = "auto"


@dataclass(frozen=True)
class Precision:
    """The resolved settings and the notes worth a line before training."""

    amp: str
    channels_last: bool
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """'bfloat16 autocast, channels_last' and the like."""
        dtype = {"none": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast"}
        layout = "channels_last" if self.channels_last else "NCHW"
        return f"{dtype[self.amp]}, {layout}"


def resolve_precision(amp: str, channels_last: bool | None, device: torch.device) -> Precision:
    """The settings a run uses on `device` for --amp `amp` and --channels-last `channels_last`
    (None: auto)."""
    notes: list[str] = []
    if amp == AUTO:
        amp = "bf16" if device.type == "cpu" and native_bfloat16(device) else "none"
    elif amp == "fp16" and device.type != "cuda":
        notes.append("note: --amp fp16 applies on CUDA only; training in float32")
        amp = "none"
    elif amp == "bf16" and not native_bfloat16(device):
        notes.append(
            f"note: this {device.type.upper()} has no native bfloat16 arithmetic; --amp bf16 "
            "is emulated and likely slower than --amp none"
        )
    if channels_last is None:
        channels_last = device.type == "cpu"
    return Precision(amp, channels_last, tuple(notes))
