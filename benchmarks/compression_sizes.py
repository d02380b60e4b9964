"""Parameter and MAC reductions per energy for the shared CIFAR ResNets, and compression time.

Run: python benchmarks/compression_sizes.py [--shared ../shared] [--threads N] [--out DIR]
Prints a table and writes compression_sizes.json. Uses --no-keep-if-larger (the reference's
sizes). Also times `ht2.compress` of vgg16_bn and resnet50 (random init, e = 0.9).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from shared_weights import WEIGHTS  # benchmarks/ is on sys.path when run as a script

import ht2

ENERGIES = (0.9, 0.8, 0.7, 0.6, 0.5)
NETS = WEIGHTS


def sizes(shared: Path) -> list[dict]:
    rows = []
    for net, file in NETS.items():
        for energy in ENERGIES:
            model = ht2.models.create(net, weights=shared / "weights" / file)
            report = ht2.compress(
                model, energy=energy, example_input=torch.zeros(1, 3, 32, 32), keep_if_larger=False
            )
            rows.append(
                {
                    "model": net,
                    "energy": energy,
                    "params_before": report.params_before,
                    "params_after": report.params_after,
                    "param_reduction": report.param_reduction,
                    "macs_before": report.macs_before,
                    "macs_after": report.macs_after,
                    "mac_reduction": report.mac_reduction,
                    "seconds": report.seconds,
                }
            )
    return rows


def timings() -> list[dict]:
    rows = []
    for net in ("vgg16_bn", "resnet50"):
        model = ht2.models.create(net)
        size = ht2.models.get_entry(net).input_size
        start = time.perf_counter()
        report = ht2.compress(model, energy=0.9, example_input=torch.zeros(1, *size))
        rows.append(
            {
                "model": net,
                "energy": 0.9,
                "seconds": time.perf_counter() - start,
                "decompose_seconds": report.seconds,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size_rows, time_rows = sizes(args.shared), timings()
    print(f"{'model':18} {'e':>4} {'params':>10} {'after':>9} {'x':>6} {'MACs x':>7} {'s':>6}")
    for r in size_rows:
        print(
            f"{r['model']:18} {r['energy']:>4} {r['params_before']:>10,} {r['params_after']:>9,} "
            f"{r['param_reduction']:>6.2f} {r['mac_reduction']:>7.2f} {r['seconds']:>6.2f}"
        )
    for r in time_rows:
        print(f"compress {r['model']} --random-init e=0.9: {r['seconds']:.1f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "compression_sizes.json"
    path.write_text(
        json.dumps(
            {"sizes": size_rows, "timings": time_rows, "torch_threads": torch.get_num_threads()},
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
