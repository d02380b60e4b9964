"""A model against its baseline, like for like: both prepared under each treatment, timed in
turn at each batch size, and reported as speedup rows (ht2.metrics.speedup).

`compare_speed` is what `ht2 benchmark` runs; `treatment_matrix` lists what `--matrix` times.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ht2.choices import RUNTIMES
from ht2.errors import BAD_JSON, HT2Error
from ht2.metrics import treatment as treatments_module
from ht2.metrics.latency import time_layers, time_models
from ht2.metrics.speedup import layer_row, mark_best, pair_row, total_macs
from ht2.metrics.treatment import Prepared, Treatment, prime

Pair = tuple[Prepared, Prepared | None]


@dataclass
class SpeedComparison:
    """What `compare_speed` measured. `treatment`/`folded` (BatchNorms folded) describe MODEL
    in the first treatment, the `baseline_*` fields the baseline (None without one); `rows`
    hold one pair per batch size and treatment, `layers` the per-layer rows and `best` the
    marked pairs of a matrix."""

    treatment: Treatment
    folded: int
    macs: int
    baseline_treatment: Treatment | None = None
    baseline_folded: int | None = None
    baseline_macs: int | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    best: list[dict[str, Any]] = field(default_factory=list)


def onnx_file_folds(path: str | Path) -> int | None:
    """How many BatchNorms `ht2 export --fold-bn` folded into this ONNX file (0: exported
    unfolded), as its onnx_check.json says; None when no such record sits beside it."""
    record = Path(path).with_name("onnx_check.json")
    try:
        return len(json.loads(record.read_text()).get("fold_bn", {}).get("folded", []))
    except (OSError, TypeError, AttributeError, *BAD_JSON):
        return None


def missing_runtime(runtime: str) -> str | None:
    """Why `runtime` cannot run here for want of a package ("not installed (pip install
    'ht2[EXTRA]')"), or None when its extra imports (or it needs none)."""
    from ht2.export import openvino_runtime, ort

    requires = {
        "onnxruntime": (ort.require_onnx, ort.INSTALL_HINT),
        "openvino": (openvino_runtime.require_openvino, openvino_runtime.INSTALL_HINT),
    }
    if runtime not in requires:
        return None
    require, hint = requires[runtime]
    try:
        require()
    except HT2Error:
        return f"not installed ({hint})"
    return None


def treatment_matrix(
    device: torch.device,
    dtype: str | None = None,
    channels_last: bool = False,
    runtime: str | None = None,
    fold_bn: bool = False,
    folded: bool = False,
) -> tuple[list[Treatment], list[str]]:
    """Every treatment `device` runs that the fixed choices allow (a `dtype`, channels_last
    only, one `runtime`, folded only with `fold_bn` or when a model came `folded`), and notes
    on what was left out. Without ONNX Runtime or OpenVINO installed, its treatments are left
    out (with a note) unless `runtime` asks for it. The list is empty when the choices leave
    none."""
    notes = []
    runtimes = [runtime] if runtime else list(RUNTIMES)
    for name in [] if runtime else list(runtimes):
        why = missing_runtime(name)
        if why is not None:
            runtimes.remove(name)
            notes.append(f"{name} left out: {why}")
    folds = (True,) if fold_bn or folded else (False, True)
    if folded and not fold_bn:
        notes.append("BatchNorms folded in every treatment: a model came folded")
    chosen = [
        t
        for t in treatments_module.all_treatments(device, runtimes, folds)
        if (dtype is None or t.dtype == dtype) and (not channels_last or t.channels_last)
    ]
    return chosen, notes


def prepare_pair(
    model: nn.Module,
    baseline: nn.Module | None,
    treatment: Treatment,
    device: torch.device,
    input_size: tuple[int, ...],
    workdir: Path,
    threads: int | None = None,
    base_treatment: Treatment | None = None,
    onnx: str | None = None,
    sizes: Sequence[int] = (1,),
) -> Pair:
    """`model` under `treatment` (or the ONNX file `onnx`, checked to take each batch size in
    `sizes`) and `baseline` under the same treatment, or `base_treatment` when given."""
    from ht2.export import OrtRunner

    tag = "-".join(treatment.cells())
    options = {"input_size": input_size, "workdir": workdir, "threads": threads}
    if onnx:
        runner = OrtRunner(onnx, threads)
        if runner.dtype != torch.float32:
            raise HT2Error(
                f"{onnx} is a {str(runner.dtype).removeprefix('torch.')} graph; ONNX Runtime "
                "treatments time float32 graphs: export it with `ht2 export DIR --format onnx` "
                "(float32 by default)"
            )
        for size in sizes:
            runner.check_input(size, input_size, onnx)
        ours = Prepared(runner, treatment, None, onnx_file_folds(onnx) or 0)
    else:
        ours = treatments_module.treat(model, treatment, device, name=f"model-{tag}", **options)
    if baseline is None:
        return ours, None
    how = base_treatment or treatment
    theirs = treatments_module.treat(baseline, how, device, name=f"baseline-{tag}", **options)
    return ours, theirs


def compare_speed(
    model: nn.Module,
    baseline: nn.Module | None,
    input_size: tuple[int, ...],
    treatments: Sequence[Treatment],
    sizes: Sequence[int],
    device: torch.device | str = "cpu",
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    base_treatment: Treatment | None = None,
    onnx: str | None = None,
    per_layer: bool = False,
    mark: bool = False,
    names: tuple[str, str] = ("the model", "the baseline"),
) -> SpeedComparison:
    """Time `model` (and `baseline`) under each treatment at each batch size in `sizes`.

    Every prepared model of every treatment runs in turn, run by run (time_models), so that
    a shared machine's slow spells hit them alike. The baseline gets MODEL's treatment unless
    `base_treatment` is given; `onnx` runs MODEL from that file instead. `per_layer` also
    times each factorized layer against its dense original in the first treatment's dtype
    and memory format; `mark` marks the fastest pairs per batch size (see mark_best).
    `names` name the two sides in errors.
    """
    device = torch.device(device)
    macs = [total_macs(m, input_size) for m in (model, baseline) if m is not None]
    rows: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ht2-benchmark-") as workdir:
        pairs = [
            prepare_pair(
                model,
                baseline,
                t,
                device,
                input_size,
                Path(workdir),
                threads=threads,
                base_treatment=base_treatment,
                onnx=onnx,
                sizes=sizes,
            )
            for t in treatments
        ]
        for size in sizes:
            x = torch.randn(size, *input_size, device=device)
            runners = [side for pair in pairs for side in pair if side is not None]
            prime(runners, x, [name for pair in pairs for name in names[: _sides(pair)]])
            timings = iter(time_models(runners, x, repeats, warmup, threads))
            for ours, theirs in pairs:
                timed = [next(timings) for _ in range(_sides((ours, theirs)))]
                how = (ours.treatment, theirs.treatment if theirs is not None else None)
                rows.append(pair_row(size, how, timed, macs))
            if per_layer:
                first = treatments[0]
                timed_layers = time_layers(
                    model, x, repeats, warmup, threads, first.dtype, first.channels_last
                )
                layers += [layer_row(size, timing) for timing in timed_layers]
    ours, theirs = pairs[0]
    return SpeedComparison(
        treatment=ours.treatment,
        folded=ours.folded,
        macs=macs[0],
        baseline_treatment=theirs.treatment if theirs is not None else None,
        baseline_folded=theirs.folded if theirs is not None else None,
        baseline_macs=macs[1] if theirs is not None else None,
        rows=rows,
        layers=layers,
        best=mark_best(rows, sizes, baseline is not None) if mark else [],
    )


def _sides(pair: Pair) -> int:
    return 1 if pair[1] is None else 2
