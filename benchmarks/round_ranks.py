"""Does rounding ranks up to a multiple of N make HT-2 faster here? Parameters against time.

Run: python benchmarks/round_ranks.py [--energies 0.9,0.7] [--multiples 1,8,16]
     [--batch-sizes 1,128] [--threads 1] [--repeats 30] [--warmup 3]
     [--dtype float32|bfloat16] [--channels-last] [--fold-bn] [--matrix]
     [--out benchmarks/results] [--out-file FILE]
Compresses the shared CIFAR-10 ResNet-20 (or the bundled one when ../shared is absent) at each
energy with each rounding multiple, prepares the original and every variant under one treatment
(dtype, memory format, BatchNorm folding; eager PyTorch) or, with --matrix, under every eager
treatment with BatchNorms folded (--dtype and --channels-last narrow it), and times them all,
run by run in turn, in one process; speed-up = original median / variant median, and
"vs round 1" = unrounded median / variant median in the same treatment. Writes
round_ranks-<treatment>.json (e.g. round_ranks-bf16-nhwc.json, round_ranks-matrix.json) under
--out, or --out-file (any file but the committed benchmarks/results/round_ranks.json).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from paths import (  # benchmarks/ is on sys.path when run as a script
    ROOT,
    command_line,
    portable,
    write_json,
)

import ht2
from ht2.choices import DTYPES
from ht2.cli.common import parse_batch_sizes
from ht2.errors import HT2Error
from ht2.metrics import Timing, time_models
from ht2.metrics.like_for_like import treatment_matrix
from ht2.metrics.treatment import Prepared, Treatment, native_bfloat16, prime, treat

NET = "cifar10_resnet20"
SHARED = ROOT.parent / "shared" / "weights" / "resnet20-12fca82f.th"
INPUT = (3, 32, 32)
DTYPE_TAGS = {"float32": "f32", "bfloat16": "bf16"}
COMMITTED = ROOT / "benchmarks" / "results" / "round_ranks.json"  # the committed measurement


def _original() -> torch.nn.Module:
    if SHARED.exists():
        return ht2.models.create(NET, weights=str(SHARED)).eval()
    return ht2.models.create(NET, weights="pretrained").eval()


def _numbers(flag: str, text: str, kind: type, low: float, high: float) -> list[Any]:
    """'a,b,c' as numbers of `kind`, each in (low, high] for floats and [low, high] for
    integers, without repeats; anything else is a one-line error."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HT2Error(f"{flag} takes {kind.__name__}s separated by commas; got {text!r}") from None
    inside = (lambda v: low < v <= high) if kind is float else (lambda v: low <= v <= high)
    bad = [v for v in values if not inside(v)]
    if bad or not values:
        span = f"in ({low:g}, {high:g}]" if kind is float else f"from {low} to {high}"
        raise HT2Error(f"{flag} must each be {span}; got {bad[0] if bad else 'none'} in {text!r}")
    return list(dict.fromkeys(values))


def _count(flag: str, text: str, low: int) -> int:
    """One integer of at least `low`, else a one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise HT2Error(f"{flag} takes an integer; got {text!r}") from None
    if value < low:
        raise HT2Error(f"{flag} must be at least {low}, got {value}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--energies", default="0.9,0.7", help="(default: 0.9,0.7)")
    parser.add_argument("--multiples", default="1,8,16", help="(default: 1,8,16)")
    parser.add_argument("--batch-sizes", default="1,128", help="(default: 1,128)")
    parser.add_argument("--threads", default="1", help="torch threads (default: 1)")
    parser.add_argument("--repeats", default="30", help="timed runs per model (default: 30)")
    parser.add_argument("--warmup", default="3", help="untimed runs first (default: 3)")
    parser.add_argument(
        "--dtype", help="float32 or bfloat16 (autocast, weights float32) (default: float32)"
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="channels_last memory format (default: NCHW)"
    )
    parser.add_argument(
        "--fold-bn", action="store_true", help="fold BatchNorms into their convs (default: off)"
    )
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="time every eager dtype x memory format this CPU runs, BatchNorms folded (so "
        "--fold-bn changes nothing); --dtype and --channels-last narrow it (default: off)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="folder (default: benchmarks/results)",
    )
    parser.add_argument("--out-file", type=Path, help="JSON to write (default: named by --out)")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Turn the flags into values and refuse bad ones before anything is compressed."""
    args.energies = _numbers("--energies", args.energies, float, 0.0, 1.0)
    args.multiples = _numbers("--multiples", args.multiples, int, 1, 2**31 - 1)
    args.batch_sizes = parse_batch_sizes(args.batch_sizes)
    args.threads = _count("--threads", args.threads, 1)
    args.repeats = _count("--repeats", args.repeats, 1)
    args.warmup = _count("--warmup", args.warmup, 0)
    if args.dtype is not None and args.dtype not in DTYPES:
        raise HT2Error(f"--dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    if args.out_file is not None and args.out_file.is_dir():
        raise HT2Error(f"--out-file {args.out_file} is a folder: give a file name")
    if args.out_file is not None and args.out_file.resolve() == COMMITTED.resolve():
        raise HT2Error(
            f"--out-file {args.out_file} is the committed {portable(COMMITTED)}: "
            "give another file name"
        )


def treatments_asked(args: argparse.Namespace, device: torch.device) -> list[Treatment]:
    """The one treatment the flags name, or the eager matrix they narrow."""
    if not args.matrix:
        return [Treatment(args.dtype or "float32", args.channels_last, "eager", args.fold_bn)]
    chosen, _ = treatment_matrix(device, args.dtype, args.channels_last, "eager", fold_bn=True)
    if not chosen:
        raise HT2Error(f"no eager treatment runs on {device} with the flags given")
    return chosen


def file_name(args: argparse.Namespace) -> str:
    """round_ranks-<treatment>.json: bf16-nhwc-folded, or matrix[-bf16][-nhwc]."""
    if args.matrix:
        parts = ["matrix"] + ([DTYPE_TAGS[args.dtype]] if args.dtype else [])
        parts += ["nhwc"] if args.channels_last else []
    else:
        parts = [DTYPE_TAGS[args.dtype or "float32"], "nhwc" if args.channels_last else "nchw"]
        parts += ["folded"] if args.fold_bn else []
    return "round_ranks-" + "-".join(parts) + ".json"


def compress_variants(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The shared ResNet-20 compressed at every energy x rounding multiple."""
    example = torch.zeros(1, *INPUT)
    variants = []
    for energy in args.energies:
        for multiple in args.multiples:
            model = _original()
            report = ht2.compress(model, energy=energy, example_input=example, round_ranks=multiple)
            variants.append(
                {"energy": energy, "round_ranks": multiple, "model": model.eval(), "report": report}
            )
    return variants


def _spread(timing: Timing) -> dict[str, float]:
    return {"q1_ms": timing.q1_ms, "q3_ms": timing.q3_ms}


def treatment_rows(
    treatment: Treatment,
    batch: int,
    variants: list[dict[str, Any]],
    prepared: list[Prepared],
    timings: list[Timing],
) -> list[dict[str, Any]]:
    """One treatment's rows at one batch size; `prepared` and `timings` start with the original."""
    base, *timed = timings
    unrounded = {
        v["energy"]: t for v, t in zip(variants, timed, strict=True) if v["round_ranks"] == 1
    }
    rows = []
    for variant, timing, ready in zip(variants, timed, prepared[1:], strict=True):
        report = variant["report"]
        plain = unrounded.get(variant["energy"])
        rows.append(
            {
                "treatment": treatment.to_dict(),
                "energy": variant["energy"],
                "round_ranks": variant["round_ranks"],
                "batch_size": batch,
                "params_x": report.param_reduction,
                "macs_x": report.mac_reduction,
                "rounding_params": report.rounding_params or 0,
                "folded": ready.folded,
                "original_ms": base.median_ms,
                "original_spread": _spread(base),
                "ms": timing.median_ms,
                "spread": _spread(timing),
                "speedup": base.median_ms / timing.median_ms,
                "vs_unrounded": None if plain is None else plain.median_ms / timing.median_ms,
            }
        )
    return rows


def measure(
    args: argparse.Namespace,
    treatments: list[Treatment],
    variants: list[dict[str, Any]],
    device: torch.device,
) -> list[dict[str, Any]]:
    """Every treatment's original and variants timed in one alternating round per batch size."""
    models = [_original(), *(v["model"] for v in variants)]
    prepared = [[treat(m, t, device, input_size=INPUT) for m in models] for t in treatments]
    runners = [p for group in prepared for p in group]
    names = ["the original", *(f"e {v['energy']:g} round {v['round_ranks']}" for v in variants)]
    width = len(models)
    rows = []
    for batch in args.batch_sizes:
        x = torch.randn(batch, *INPUT, device=device)
        prime(runners, x, names * len(treatments))
        timings = time_models(runners, x, args.repeats, args.warmup, args.threads)
        for index, t in enumerate(treatments):
            mine = timings[index * width : (index + 1) * width]
            rows += treatment_rows(t, batch, variants, prepared[index], mine)
    return rows


def verdicts(treatments: list[Treatment], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per treatment: in how many (energy, multiple > 1, batch) cells the rounded variant's
    median beat the unrounded one's, and the best such ratio (None without round 1)."""
    found = []
    for t in treatments:
        cells = [
            r
            for r in rows
            if r["treatment"] == t.to_dict()
            and r["round_ranks"] > 1
            and r["vs_unrounded"] is not None
        ]
        best = max(cells, key=lambda r: r["vs_unrounded"], default=None)
        found.append(
            {
                "treatment": t.to_dict(),
                "cells": len(cells),
                "rounded_faster": sum(r["vs_unrounded"] > 1 for r in cells),
                "best": None
                if best is None
                else {k: best[k] for k in ("energy", "round_ranks", "batch_size", "vs_unrounded")},
            }
        )
    return found


def verdict_text(verdict: dict[str, Any]) -> str:
    """'rounded faster than unrounded in K of N cells; best R (e, round, batch)'."""
    best = verdict["best"]
    if best is None:
        return "no rounded variant to compare with round 1"
    return (
        f"rounded faster than unrounded in {verdict['rounded_faster']} of {verdict['cells']} "
        f"cells; best {best['vs_unrounded']:.2f}x (e {best['energy']:g}, round "
        f"{best['round_ranks']}, batch {best['batch_size']})"
    )


def print_rows(rows: list[dict[str, Any]]) -> None:
    print("| treatment | e | round | batch | params x | MACs x | ms | vs original | vs round 1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        how = " ".join(Treatment.from_dict(row["treatment"]).cells())
        vs = "-" if row["vs_unrounded"] is None else f"{row['vs_unrounded']:.2f}x"
        print(
            f"| {how} | {row['energy']} | {row['round_ranks']} | {row['batch_size']} | "
            f"{row['params_x']:.2f} | {row['macs_x']:.2f} | {row['ms']:.2f} | "
            f"{row['speedup']:.2f}x | {vs} |"
        )


def cpu_facts() -> dict[str, Any]:
    """The CPU's model name, core count and whether it has AVX-512 BF16 and AMX."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
        models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        name = models[0] if models else name
    checks = {"avx512_bf16": "_is_avx512_bf16_supported", "amx": "_is_amx_tile_supported"}
    flags = {key: bool(getattr(torch.cpu, check, lambda: False)()) for key, check in checks.items()}
    return {"model": name, "count": os.cpu_count(), **flags}


def run(argv: list[str]) -> Path:
    """The whole benchmark: the table printed, the JSON written; returns its path."""
    args = parse_args(argv)
    check_args(args)
    device = torch.device("cpu")
    treatments = treatments_asked(args, device)
    torch.manual_seed(0)
    load_start = [round(v, 2) for v in os.getloadavg()]
    rows = measure(args, treatments, compress_variants(args), device)
    native = native_bfloat16(device)
    notes = []
    if any(t.dtype == "bfloat16" for t in treatments) and not native:
        notes.append("bfloat16 is emulated on this CPU: its times say little")
    payload = {
        "benchmark": "round_ranks",
        "command": command_line("python benchmarks/round_ranks.py", argv),
        "model": NET,
        "torch": torch.__version__,
        "cpu": cpu_facts(),
        "bfloat16_native": native,
        "threads": args.threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "matrix": args.matrix,
        "treatments": [t.to_dict() for t in treatments],
        "load_average": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]},
        "notes": notes,
        "verdicts": verdicts(treatments, rows),
        "rows": rows,
    }
    print_rows(rows)
    for verdict in payload["verdicts"]:
        print(f"{Treatment.from_dict(verdict['treatment']).describe()}: {verdict_text(verdict)}")
    for note in notes:
        print(f"note: {note}")
    path = write_json(args.out_file or args.out / file_name(args), payload)
    print(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    try:
        run(sys.argv[1:] if argv is None else argv)
    except HT2Error as error:
        print(f"round_ranks: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
