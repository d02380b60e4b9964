"""Compare decomposition methods at the same size targets: size, error, accuracy and speed.

For every target ("4x fewer parameters") and method, a fresh copy of the original is
compressed to that target, scored before and after BatchNorm calibration and timed against the
original. How the target is spread over the layers is an allocation: "uniform" (one global
energy, the library's target rule) is built in; others plug in through `Allocator`. A goal can
also be a fixed `Energy` instead of a target: the rows of an energy sweep (ht2.experiments.sweep).
The method "prune" is the rival users weigh decomposition against: channel pruning to the same
target (ht2.planning.pruning), which spreads its cut itself and so takes no allocation.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ht2.errors import HT2Error
from ht2.experiments.pareto import Point, draw_curves
from ht2.io import atomic_directory
from ht2.metrics import count_params, layer_macs, time_models
from ht2.planning import compress
from ht2.surgery import CompressionReport
from ht2.surgery.targets import TOLERANCE, Target

PRUNE = "prune"
ModelFactory = Callable[[], nn.Module]
Scorer = Callable[[nn.Module], float]
Calibrator = Callable[[nn.Module], int]

WEIGHT_ERROR = (
    "sqrt(sum_l ||W_l - W_hat_l||_F^2 / sum_l ||W_l||_F^2) over the replaced layers l, "
    "from each layer's relative error and the Frobenius norm of its original weight"
)
LATENCY = (
    "original's median time / compressed model's, alternating runs in one process "
    "(above 1 is faster)"
)


@dataclass(frozen=True)
class Energy:
    """A fixed global energy for every layer: a goal without a size target."""

    value: float

    kind = "energy"

    @property
    def factor(self) -> float:
        return self.value


Goal = Target | Energy


@dataclass(frozen=True)
class AllocationRequest:
    """What an allocator may look at to decide how one target is spread over the layers."""

    method: str
    target: Target
    model: nn.Module  # a fresh original, about to be compressed in place
    example_input: torch.Tensor


Allocator = Callable[[AllocationRequest], dict[str, Any]]


def uniform_allocation(request: AllocationRequest) -> dict[str, Any]:
    """One global energy for the whole model, bisected to the target by compress()."""
    return {"target": request.target}


ALLOCATIONS: dict[str, Allocator] = {"uniform": uniform_allocation}


@dataclass
class CompareRow:
    """One (method, allocation, target): what compressing to it gave, or why it could not."""

    method: str
    target_kind: str  # "params" | "macs", or "energy" for a fixed energy
    target_factor: float  # the reduction factor, or the energy
    allocation: str = "uniform"
    met: bool | None = None  # within 2 % of the target (any energy is met); None: not compressed
    energy: float | None = None
    params: int | None = None
    param_reduction: float | None = None
    macs: int | None = None
    mac_reduction: float | None = None
    weight_error: float | None = None
    top1: float | None = None  # zero-shot
    top1_calibrated: float | None = None
    latency_ms: dict[int, float] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0  # compression time (rank search included)
    note: str = ""  # why the target was missed or out of reach

    @property
    def target_label(self) -> str:
        if self.target_kind == Energy.kind:
            return f"energy {self.target_factor:g}"
        return f"{self.target_factor:g}x {self.target_kind}"

    @property
    def accuracy(self) -> float | None:
        """The accuracy to rank by: calibrated top-1 when measured, else zero-shot."""
        return self.top1_calibrated if self.top1_calibrated is not None else self.top1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency_ms"] = {str(k): v for k, v in self.latency_ms.items()}
        data["speedup"] = {str(k): v for k, v in self.speedup.items()}
        return data


@dataclass
class CompareResult:
    """The original's figures, one row per (target, method, allocation), and the settings."""

    model: str
    original: dict[str, Any]
    rows: list[CompareRow]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "settings": self.settings,
            "definitions": {"weight_error": WEIGHT_ERROR, "latency_x": LATENCY},
            "original": self.original,
            "rows": [row.to_dict() for row in self.rows],
        }


def fresh_copies(original: nn.Module) -> ModelFactory:
    """A factory of deep copies of `original`, so that every row starts from the very same
    weights (random initial ones included) without loading them again."""
    return lambda: copy.deepcopy(original)


def weight_norms(model: nn.Module) -> dict[str, float]:
    """Frobenius norm of every Conv/Linear weight, by qualified name (before compression)."""
    return {
        name: float(module.weight.detach().norm())
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    }


def weight_error(report: CompressionReport, norms: Mapping[str, float]) -> float | None:
    """The relative weight error of the replaced layers together (see WEIGHT_ERROR)."""
    lost = total = 0.0
    for layer in report.replaced:
        if layer.rel_error is None or layer.name not in norms:
            continue
        lost += (layer.rel_error * norms[layer.name]) ** 2
        total += norms[layer.name] ** 2
    return math.sqrt(lost / total) if total > 0 else None


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _measure(
    row: CompareRow,
    model: nn.Module,
    original: nn.Module,
    input_size: Sequence[int],
    score: Scorer | None,
    calibrate: Calibrator | None,
    batch_sizes: Sequence[int],
    repeats: int,
) -> None:
    """Fill in top-1 before and after calibration and the latency ratios of one row."""
    if score is not None:
        row.top1 = score(model)
    if calibrate is not None:
        calibrate(model)
        if score is not None:
            row.top1_calibrated = score(model)
    model.eval()
    for batch in batch_sizes:
        x = torch.randn(batch, *input_size)
        ours, theirs = time_models([model, original], x, repeats=repeats, warmup=2)
        row.latency_ms[batch] = ours.median_ms
        row.speedup[batch] = theirs.median_ms / ours.median_ms


def _compress_row(
    make_model: ModelFactory,
    example: torch.Tensor,
    method: str,
    target: Goal,
    allocation: str,
    allocator: Allocator,
    keep_if_larger: bool,
    progress: bool,
    refine_sweeps: int = 0,
) -> tuple[CompareRow, nn.Module | None]:
    """A fresh original compressed to `target` (or at its energy); an unreachable target gives
    a row with a note."""
    row = CompareRow(method, target.kind, target.factor, allocation)
    model = make_model().eval()
    if method == PRUNE:
        return _prune_row(row, model, example, target)
    norms = weight_norms(model)
    try:
        if isinstance(target, Energy):
            kwargs: dict[str, Any] = {"energy": target.value}
        else:
            kwargs = allocator(AllocationRequest(method, target, model, example))
        report = compress(
            model,
            method=method,
            example_input=example,
            keep_if_larger=keep_if_larger,
            progress=progress,
            refine_sweeps=refine_sweeps,
            **kwargs,
        )
    except HT2Error as error:
        row.note = str(error)
        return row, None
    if isinstance(target, Energy):
        row.met = True
    else:
        reached = report.param_reduction if target.kind == "params" else report.mac_reduction
        row.met = reached is not None and abs(reached / target.factor - 1) <= TOLERANCE
        row.note = str((report.target or {}).get("note", ""))
        if not row.met and not row.note:
            row.note = f"reached {reached or 0:.2f}x, not within {TOLERANCE:.0%} of the target"
    same = all(layer.energy == report.energy for layer in report.replaced)
    row.energy = report.energy if same else None  # None: energies (or ranks) per layer
    row.params = report.params_after
    row.param_reduction = report.param_reduction
    row.macs = report.macs_after
    row.mac_reduction = report.mac_reduction
    row.weight_error = weight_error(report, norms)
    row.seconds = report.seconds
    return row, model


def _prune_row(
    row: CompareRow, model: nn.Module, example: torch.Tensor, target: Goal
) -> tuple[CompareRow, nn.Module | None]:
    """The original channel-pruned to `target` (a size, not an energy)."""
    from ht2.planning.pruning import prune

    row.allocation = "-"  # pruning spreads its cut itself
    if isinstance(target, Energy):
        row.note = "channel pruning takes a size target, not an energy"
        return row, None
    start = time.perf_counter()
    try:
        plan = prune(model, target.factor, example, kind=target.kind)
    except HT2Error as error:
        row.note = str(error)
        return row, None
    reached = plan.param_reduction if target.kind == "params" else plan.mac_reduction
    row.met = abs(reached / target.factor - 1) <= TOLERANCE
    row.params, row.param_reduction = plan.params_after, plan.param_reduction
    row.macs, row.mac_reduction = plan.macs_after, plan.mac_reduction
    row.seconds = time.perf_counter() - start
    return row, model


def run_compare(
    make_model: ModelFactory,
    input_size: Sequence[int],
    targets: Sequence[Goal],
    methods: Sequence[str],
    score: Scorer | None = None,
    calibrate: Calibrator | None = None,
    batch_sizes: Sequence[int] = (1, 128),
    repeats: int = 10,
    allocations: Mapping[str, Allocator] | None = None,
    keep_if_larger: bool = True,
    progress: bool = True,
    refine_sweeps: int = 0,
) -> tuple[dict[str, Any], list[CompareRow]]:
    """The original's figures and one row per (target, method, allocation), in that order.

    `make_model` builds a fresh original (weights loaded) each time; `score` returns top-1 in
    percent, `calibrate` re-estimates BatchNorm statistics in place (either None skips it);
    an empty `batch_sizes` skips timing. `allocations` maps names to allocators (default:
    uniform only); an `Energy` goal takes no allocation. A target that cannot be reached
    becomes a row with the reason in `note`. `refine_sweeps` goes to every compress()
    (ALS/HOOI rounds of HT-2 and Tucker-2 factors).
    """
    allocations = dict(allocations or {"uniform": uniform_allocation})
    if not targets or not methods:
        raise HT2Error("nothing to compare: give at least one target and one method")
    if set(allocations) != {"uniform"} and any(isinstance(t, Energy) for t in targets):
        raise HT2Error("an energy fixes every layer's rank: it takes no allocation but uniform")
    example = torch.zeros(1, *input_size)
    original = make_model().eval()
    base = {
        "params": count_params(original),
        "macs": sum(layer_macs(original, example).values()),
        "top1": score(original) if score else None,
    }
    _log(f"original: {base['params']:,} params, {base['macs']:,} MACs, top-1 {base['top1']}")
    jobs = [
        (t, m, a)
        for t in targets
        for m in methods
        for a in allocations
        if m != PRUNE or a == next(iter(allocations))  # pruning takes no allocation
    ]
    rows = []
    bar = tqdm(
        jobs, desc="compare", unit="model", file=sys.stderr, disable=None if progress else True
    )  # None: off when not a terminal
    for target, method, allocation in bar:
        bar.set_postfix_str(f"{method} {target.factor:g}x {target.kind} {allocation}")
        row, model = _compress_row(
            make_model,
            example,
            method,
            target,
            allocation,
            allocations[allocation],
            keep_if_larger,
            progress,
            refine_sweeps,
        )
        if model is not None:
            _measure(row, model, original, input_size, score, calibrate, batch_sizes, repeats)
        rows.append(row)
        _log(row_summary(row))
    bar.close()
    return base, rows


def row_summary(row: CompareRow) -> str:
    """One line for the log: what a row reached, or why it could not."""
    head = f"{row.method} ({row.allocation}) at {row.target_label}"
    if row.param_reduction is None:
        return f"{head}: skipped: {row.note}"
    text = (
        f"{head}: {row.param_reduction:.2f}x params, {row.mac_reduction or 0:.2f}x MACs, "
        f"weight error {_num(row.weight_error, '.4f')}, top-1 {_num(row.top1, '.2f')} -> "
        f"{_num(row.top1_calibrated, '.2f')} calibrated"
    )
    if row.speedup:
        text += ", speedup " + ", ".join(f"b{b} {s:.2f}x" for b, s in row.speedup.items())
    return text


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _best_lines(rows: Sequence[CompareRow]) -> list[str]:
    """Per target, the rows with the highest accuracy (calibrated when measured), ties all."""
    lines = []
    for label in dict.fromkeys(row.target_label for row in rows):
        scored = [r for r in rows if r.target_label == label and r.accuracy is not None]
        if scored:
            top = max(r.accuracy or 0.0 for r in scored)
            names = ", ".join(_name(r, rows) for r in scored if r.accuracy == top)
            lines.append(f"- {label}: {names} ({top:.2f} %)")
    return lines


def _several_allocations(rows: Sequence[CompareRow]) -> bool:
    """Whether the decomposition rows were spread by more than one allocation."""
    return len({r.allocation for r in rows if r.method != PRUNE}) > 1


def _name(row: CompareRow, rows: Sequence[CompareRow]) -> str:
    if row.method != PRUNE and _several_allocations(rows):
        return f"{row.method}/{row.allocation}"
    return row.method


def compare_markdown(result: CompareResult) -> str:
    """The comparison as a Markdown table people read, with its definitions."""
    rows, base = result.rows, result.original
    batches = sorted({b for row in rows for b in row.speedup})
    several = _several_allocations(rows)
    head = ["target", "method"] + (["allocation"] if several else [])
    head += ["params x", "MACs x", "weight error", "top-1 zero-shot", "top-1 calibrated"]
    head += [f"latency x b{b}" for b in batches] + ["note"]
    lines = [
        f"# {result.model}: methods compared at the same size",
        "",
        f"Original: {base['params']:,} parameters, {base['macs']:,} MACs"
        + (f", top-1 {base['top1']:.2f} %." if base.get("top1") is not None else "."),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if 2 <= i < len(head) - 1 else "---" for i in range(len(head))) + "|",
    ]
    for row in rows:
        cells = [row.target_label, row.method] + ([row.allocation] if several else [])
        cells += [
            _num(row.param_reduction, ".2f") + ("x" if row.param_reduction else ""),
            _num(row.mac_reduction, ".2f") + ("x" if row.mac_reduction else ""),
            _num(row.weight_error, ".4f"),
            _num(row.top1, ".2f"),
            _num(row.top1_calibrated, ".2f"),
        ]
        cells += [
            _num(row.speedup.get(b), ".2f") + ("x" if b in row.speedup else "") for b in batches
        ]
        cells.append(row.note.replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    best = _best_lines(rows)
    if best:
        lines += ["", "Highest top-1 at each target:", "", *best]
    lines += [
        "",
        f"weight error: {WEIGHT_ERROR}.",
        "top-1 calibrated: after re-estimating BatchNorm statistics on training images "
        "(no gradient step).",
        f"latency x: {LATENCY}.",
    ]
    settings = ", ".join(f"{k} {v}" for k, v in result.settings.items() if v is not None)
    if settings:
        lines += ["", f"Settings: {settings}."]
    return "\n".join(lines) + "\n"


def plot_compare(result: CompareResult, path: Path) -> None:
    """Pareto plot: x parameter reduction, y calibrated top-1 (else zero-shot), curve per method."""
    curves: dict[str, list[Point]] = {}
    for row in result.rows:
        if row.param_reduction is None or row.accuracy is None:
            continue
        label = f"{row.target_factor:g}x" + (" MACs" if row.target_kind == "macs" else "")
        point = Point(row.param_reduction, row.accuracy, 40 * (row.mac_reduction or 1.0), label)
        curves.setdefault(_name(row, result.rows), []).append(point)
    calibrated = any(row.top1_calibrated is not None for row in result.rows)
    draw_curves(
        curves,
        path,
        f"{result.model}: labels are targets, bubble area the MAC reduction",
        "top-1 % after BN calibration" if calibrated else "top-1 % (zero-shot)",
        baseline=result.original.get("top1"),
    )


def write_compare(result: CompareResult, out: Path, overwrite: bool = False) -> None:
    """OUT/compare.md, compare.json and pareto.png, written whole or not at all."""
    with atomic_directory(out, overwrite=overwrite) as staging:
        (staging / "compare.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
        (staging / "compare.md").write_text(compare_markdown(result))
        plot_compare(result, staging / "pareto.png")
