"""Does rounding ranks up to a multiple of N make HT-2 faster here? Parameters against time.

Run: python benchmarks/round_ranks.py [--energies 0.9,0.7] [--multiples 1,8,16]
     [--batch-sizes 1,128] [--threads 1] [--repeats 30] [--out benchmarks/results]
Compresses the shared CIFAR-10 ResNet-20 (or the bundled one when ../shared is absent) at each
energy with each rounding multiple and times every variant against the original, alternating
run by run in one process; speed-up = original median / variant median.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import ht2
from ht2.metrics import time_models

NET = "cifar10_resnet20"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "weights" / "resnet20-12fca82f.th"


def _original() -> torch.nn.Module:
    if SHARED.exists():
        return ht2.models.create(NET, weights=str(SHARED)).eval()
    return ht2.models.create(NET, weights="pretrained").eval()


def _csv(kind):
    return lambda text: [kind(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--energies", type=_csv(float), default=[0.9, 0.7], help="(0.9,0.7)")
    parser.add_argument("--multiples", type=_csv(int), default=[1, 8, 16], help="(1,8,16)")
    parser.add_argument("--batch-sizes", type=_csv(int), default=[1, 128], help="(1,128)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per model (30)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder")
    args = parser.parse_args()
    example = torch.zeros(1, 3, 32, 32)
    original = _original()
    rows = []
    for energy in args.energies:
        variants = []
        for multiple in args.multiples:
            model = _original()
            report = ht2.compress(model, energy=energy, example_input=example, round_ranks=multiple)
            variants.append((multiple, model.eval(), report))
        for batch in args.batch_sizes:
            x = torch.randn(batch, 3, 32, 32)
            timings = time_models(
                [original, *(m for _, m, _ in variants)], x, args.repeats, 3, args.threads
            )
            base = timings[0].median_ms
            for (multiple, _, report), timing in zip(variants, timings[1:], strict=True):
                rows.append(
                    {
                        "energy": energy,
                        "round_ranks": multiple,
                        "batch_size": batch,
                        "params_x": report.param_reduction,
                        "macs_x": report.mac_reduction,
                        "rounding_params": report.rounding_params or 0,
                        "original_ms": base,
                        "ms": timing.median_ms,
                        "speedup": base / timing.median_ms,
                    }
                )
    print("| e | round | batch | params x | MACs x | ms | speed-up vs original |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['energy']} | {row['round_ranks']} | {row['batch_size']} | "
            f"{row['params_x']:.2f} | {row['macs_x']:.2f} | {row['ms']:.2f} | "
            f"{row['speedup']:.2f}x |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "round_ranks.json"
    payload = {"model": NET, "threads": args.threads, "repeats": args.repeats, "rows": rows}
    path.write_text(json.dumps(payload, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
