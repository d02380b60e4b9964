"""Inference speed of compressed CIFAR ResNets: original vs plain factors vs latency-aware forms.

Run: python benchmarks/latency_aware_speed.py [--shared ../shared] [--threads 1] [--device cpu]
     [--models cifar10_resnet20,cifar10_resnet56] [--energies 0.9,0.7] [--batch-sizes 1,128]
Each network is compressed at each energy with --no-keep-if-larger (the reference's factors),
then, per batch size, its layers are put in their fastest forms (`choose_forms`) and the three
models run in turn, run by run, in one process; speed-ups are original time / model time, of
the medians and of the fastest runs ("min": on a loaded machine short runs are often
preempted, and the fastest run is then the steadier measure).
Shared weights from SHARED/weights when present, else random init (speed does not depend on
them). Prints a table and writes latency_aware_speed[-DEVICE].json under --out.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
from collections import Counter
from pathlib import Path

import torch
from paths import write_json  # benchmarks/ is on sys.path when run as a script
from shared_weights import WEIGHTS
from torch import nn

import ht2
from ht2.metrics import layer_macs, time_models
from ht2.surgery.latency_aware import choose_forms


def original(name: str, shared: Path) -> tuple[nn.Module, str]:
    """The network with its shared weights when they are there, else random ones."""
    file = shared / "weights" / WEIGHTS.get(name, "")
    if name in WEIGHTS and file.is_file():
        return ht2.models.create(name, weights=file).eval(), "shared"
    return ht2.models.create(name).eval(), "random"


def total_macs(model: nn.Module, x: torch.Tensor) -> int:
    return sum(layer_macs(model, x).values())


def measure(args: argparse.Namespace, name: str, energy: float) -> list[dict]:
    """Rows for one network at one energy: one per batch size."""
    base, weights = original(name, args.shared)
    one = torch.zeros(1, *ht2.models.get_entry(name).input_size)
    plain = copy.deepcopy(base)
    report = ht2.compress(plain, energy=energy, example_input=one, keep_if_larger=False)
    rows = []
    for batch in args.batch_sizes:
        aware = copy.deepcopy(plain)
        chosen = choose_forms(
            aware,
            one,
            args.device,
            batch,
            args.threads,
            args.choose_repeats,
            args.warmup,
            check_model=args.model_check,
            allow_dense=True,  # the figures in BENCHMARKS.md let layers go back to dense
        )
        x = torch.randn(batch, *one.shape[1:], device=args.device)
        models = [m.to(args.device) for m in (base, plain, aware)]
        timings = time_models(models, x, args.repeats, args.warmup, args.threads)
        for m in models:
            m.to("cpu")
        ms = [t.median_ms for t in timings]
        rows.append(
            {
                "model": name,
                "weights": weights,
                "energy": energy,
                "batch": batch,
                "macs_original": report.macs_before,
                "macs_factors": report.macs_after,
                "macs_latency_aware": total_macs(aware, one),
                "ms_original": ms[0],
                "ms_factors": ms[1],
                "ms_latency_aware": ms[2],
                "iqr_ms": [t.iqr_ms for t in timings],
                "min_ms": [t.min_ms for t in timings],
                "speedup_factors": ms[0] / ms[1],
                "speedup_latency_aware": ms[0] / ms[2],
                "min_speedup_factors": timings[0].min_ms / timings[1].min_ms,
                "min_speedup_latency_aware": timings[0].min_ms / timings[2].min_ms,
                "forms": dict(Counter(choice.form for choice in chosen.layers)),
                "layer_forms": {choice.name: choice.form for choice in chosen.layers},
                "check_model_ms": chosen.model_ms,
                "layout_kept": chosen.kept,
            }
        )
        print_row(rows[-1])
    return rows


HEADERS = (
    "model",
    "e",
    "batch",
    "MACs fewer",
    "original ms",
    "factors ms",
    "factors x",
    "aware ms",
    "aware x",
    "min: factors x",
    "min: aware x",
    "forms kept",
)


def cells(row: dict) -> list[str]:
    forms = " ".join(f"{form}:{count}" for form, count in sorted(row["forms"].items()))
    return [
        row["model"].removeprefix("cifar10_"),
        f"{row['energy']:.1f}",
        str(row["batch"]),
        f"{row['macs_original'] / row['macs_factors']:.2f}x",
        f"{row['ms_original']:.2f}",
        f"{row['ms_factors']:.2f}",
        f"{row['speedup_factors']:.2f}x",
        f"{row['ms_latency_aware']:.2f}",
        f"{row['speedup_latency_aware']:.2f}x",
        f"{row['min_speedup_factors']:.2f}x",
        f"{row['min_speedup_latency_aware']:.2f}x",
        forms,
    ]


def print_row(row: dict) -> None:
    print(" | ".join(cells(row)), flush=True)


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--models", default="cifar10_resnet20,cifar10_resnet56")
    parser.add_argument("--energies", default="0.9,0.7")
    parser.add_argument("--batch-sizes", default="1,128")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per model")
    parser.add_argument("--choose-repeats", type=int, default=15, help="timed runs per form")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--no-model-check",
        dest="model_check",
        action="store_false",
        help="keep each layer's fastest form without the whole-model check",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    args.models = args.models.split(",")
    args.energies = [float(e) for e in args.energies.split(",")]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    return args


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    print(" | ".join(HEADERS), flush=True)
    rows = [row for name in args.models for e in args.energies for row in measure(args, name, e)]
    print()
    print(markdown(rows))
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor()
    suffix = "" if args.device == "cpu" else f"-{args.device}"
    write_json(
        args.out / f"latency_aware_speed{suffix}.json",
        {
            "device": args.device,
            "device_name": device or platform.machine(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "repeats": args.repeats,
            "choose_repeats": args.choose_repeats,
            "model_check": args.model_check,
            "torch": torch.__version__,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
