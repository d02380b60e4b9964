"""Compress at several energies (and methods); measure size, accuracy and speed of each.

An energy sweep is a comparison (ht2.experiments.compare) whose goals are fixed energies;
its rows keep their own JSON and Markdown form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ht2.errors import HT2Error
from ht2.experiments.compare import CompareRow, Energy, ModelFactory, Scorer, run_compare


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


def sweep(
    make_model: ModelFactory,
    input_size: Sequence[int],
    energies: Sequence[float],
    methods: Sequence[str] = ("ht2",),
    score: Scorer | None = None,
    batch_sizes: Sequence[int] = (1, 128),
    repeats: int = 10,
    keep_if_larger: bool = True,
    progress: bool = True,
) -> tuple[dict[str, Any], list[SweepRow]]:
    """The original's figures and one row per (method, energy), method by method.

    The rows are those of run_compare (ht2.experiments.compare) at fixed energies, without
    BatchNorm calibration: `make_model` builds a fresh original each time (fresh_copies
    shares one model's weights); `score` returns top-1 in percent (None skips accuracy).
    Latencies alternate compressed and original runs in one process at each batch size, so
    the speedup is a ratio measured under the same noise. A model that cannot be compressed
    at an energy is an HT2Error naming both.
    """
    goals = [Energy(energy) for energy in energies]
    base, rows = run_compare(
        make_model,
        input_size,
        goals,
        methods,
        score,
        None,
        batch_sizes,
        repeats,
        keep_if_larger=keep_if_larger,
        progress=progress,
    )
    order = {method: index for index, method in enumerate(methods)}
    rows.sort(key=lambda row: order[row.method])  # stable: energies keep their order
    return base, [sweep_row(row, base) for row in rows]


def sweep_row(row: CompareRow, base: dict[str, Any]) -> SweepRow:
    """A compared row at a fixed energy as a row of the sweep, top-1 against `base`'s."""
    if row.params is None or row.param_reduction is None:
        raise HT2Error(f"{row.method} at energy {row.target_factor:g}: {row.note}")
    top1 = row.top1
    return SweepRow(
        row.method,
        row.target_factor,
        row.params,
        row.param_reduction,
        row.macs or 0,
        row.mac_reduction or 0.0,
        top1,
        None if top1 is None or base["top1"] is None else top1 - base["top1"],
        dict(row.latency_ms),
        dict(row.speedup),
        seconds=row.seconds,
    )


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
