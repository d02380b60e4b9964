"""Compress at several energies (and methods); measure size, accuracy and speed of each."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ht2.metrics import count_params, layer_macs, time_models
from ht2.surgery import compress

ModelFactory = Callable[[], nn.Module]
Scorer = Callable[[nn.Module], float]


@dataclass
class SweepRow:
    """One compressed model of the sweep against the original."""

    method: str
    energy: float
    params: int
    param_reduction: float
    macs: int
    mac_reduction: float
    top1: float | None
    delta_top1: float | None
    latency_ms: dict[int, float] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency_ms"] = {str(k): v for k, v in self.latency_ms.items()}
        data["speedup"] = {str(k): v for k, v in self.speedup.items()}
        return data


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sweep(
    make_model: ModelFactory,
    input_size: Sequence[int],
    energies: Sequence[float],
    methods: Sequence[str] = ("ht2",),
    score: Scorer | None = None,
    batch_sizes: Sequence[int] = (1, 128),
    repeats: int = 10,
    keep_if_larger: bool = True,
) -> tuple[dict[str, Any], list[SweepRow]]:
    """The original's figures and one row per (method, energy).

    `make_model` builds a fresh original each time (weights loaded); `score` returns top-1
    in percent (None skips accuracy). Latencies alternate compressed and original runs in one
    process at each batch size, so the speedup is a ratio measured under the same noise.
    """
    example = torch.zeros(1, *input_size)
    original = make_model().eval()
    base_macs = sum(layer_macs(original, example).values())
    base = {
        "params": count_params(original),
        "macs": base_macs,
        "top1": score(original) if score else None,
    }
    _log(f"original: {base['params']:,} params, {base_macs:,} MACs, top-1 {base['top1']}")
    rows = []
    for method in methods:
        for energy in energies:
            model = make_model().eval()
            report = compress(
                model,
                energy=energy,
                method=method,
                example_input=example,
                keep_if_larger=keep_if_larger,
            )
            top1 = score(model) if score else None
            row = SweepRow(
                method,
                energy,
                report.params_after,
                report.param_reduction,
                report.macs_after or 0,
                report.mac_reduction or 0.0,
                top1,
                None if top1 is None or base["top1"] is None else top1 - base["top1"],
                seconds=report.seconds,
            )
            for batch in batch_sizes:
                x = torch.randn(batch, *input_size)
                ours, theirs = time_models([model, original], x, repeats=repeats, warmup=2)
                row.latency_ms[batch] = ours.median_ms
                row.speedup[batch] = theirs.median_ms / ours.median_ms
            rows.append(row)
            _log(
                f"{method} e={energy}: {row.param_reduction:.2f}x params, "
                f"{row.mac_reduction:.2f}x MACs, top-1 {top1}, speedup "
                + ", ".join(f"b{b} {s:.2f}x" for b, s in row.speedup.items())
            )
    return base, rows


def sweep_markdown(model: str, base: dict[str, Any], rows: Sequence[SweepRow]) -> str:
    """The sweep as a Markdown table, one row per (method, energy)."""
    batches = sorted({b for row in rows for b in row.speedup})
    head = ["method", "energy", "params x", "MACs x", "top-1 %", "delta top-1"]
    head += [f"latency x b{b}" for b in batches]
    lines = [
        f"# {model}: energy sweep",
        "",
        f"Original: {base['params']:,} parameters, {base['macs']:,} MACs"
        + (f", top-1 {base['top1']:.2f} %." if base["top1"] is not None else "."),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if i > 0 else "---" for i in range(len(head))) + "|",
    ]
    for row in rows:
        cells = [
            row.method,
            f"{row.energy:g}",
            f"{row.param_reduction:.2f}x",
            f"{row.mac_reduction:.2f}x",
            "-" if row.top1 is None else f"{row.top1:.2f}",
            "-" if row.delta_top1 is None else f"{row.delta_top1:+.2f}",
        ]
        cells += [f"{row.speedup[b]:.2f}x" for b in batches]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "latency x: original's median time / compressed model's, alternating runs in "
        "one process (above 1 is faster).",
    ]
    return "\n".join(lines) + "\n"
