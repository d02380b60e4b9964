"""Seconds and peak memory to compress whole models, ht2's decomposition against two baselines.

Run: python benchmarks/decompose_speed.py [--threads 1] [--models vgg16_bn resnet50 ...]
                                          [--paths ours float64 full_svd] [--device cpu]
Each (model, path) runs in its own subprocess, so peak RSS is per case. Paths:
  ours      what ht2 does: float32 Gram + eigen-solve for float32 weights, ranks checked
            against the float64 rule near their threshold;
  float64   the same algorithm entirely in float64 (what ht2 did before);
  full_svd  a plain baseline: torch.linalg.svd(full_matrices=False) in float64 per unfolding.
Random init, e = 0.9, `ht2.compress`. Ranks of every path are compared to `ours`.
Prints a table and writes --out (default benchmarks/results/decompose_speed.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("vgg16_bn", "resnet50", "googlenet", "cifar10_densenet40")
PATHS = ("ours", "float64", "full_svd")
DECOMP_MODULES = ("ht2.decomp.svd", "ht2.decomp.ht2", "ht2.decomp.tucker2")


def _patch(path: str) -> None:
    """Swap the spectrum routine of the decompositions for a baseline's."""
    import importlib

    import torch

    from ht2.decomp.basis import Spectrum
    from ht2.decomp.ranks import energy_rank

    def float64(tensor: torch.Tensor) -> torch.dtype:
        return torch.float64

    def full_svd(matrix: torch.Tensor, energy=None, vectors: bool = True) -> Spectrum:
        u, s, _ = torch.linalg.svd(matrix.detach().to(torch.float64), full_matrices=False)
        s2 = s.square()
        rank = energy_rank(s2, energy) if energy is not None else None
        return Spectrum(s2, u if vectors else None, rank)

    for name in DECOMP_MODULES:
        module = importlib.import_module(name)
        module.working_dtype = float64
        if path == "full_svd":
            module.spectrum = full_svd


def run_case(model_name: str, path: str, energy: float, device: str) -> dict:
    """Build one model, compress it, return seconds, peak memory and every layer's ranks."""
    import torch

    import ht2

    if path != "ours":
        _patch(path)
    torch.manual_seed(0)
    model = ht2.models.create(model_name).to(device)
    example = torch.zeros(1, *ht2.models.get_entry(model_name).input_size, device=device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):  # start the solver libraries outside the timing
        warm = torch.randn(64, 64, device=device)
        torch.linalg.eigh(warm @ warm.T)
        torch.linalg.qr(warm)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    report = ht2.compress(model, energy=energy, example_input=example)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {
        "model": model_name,
        "path": path,
        "seconds": seconds,
        "peak_rss_mib": rss_after / 1024,
        "rss_before_mib": rss_before / 1024,
        "ranks": {layer.name: layer.ranks for layer in report.replaced},
        "params_after": report.params_after,
    }
    if device.startswith("cuda"):
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def _child(args: argparse.Namespace, model: str, path: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    command = [sys.executable, __file__, "--case", model, path, "--threads", str(args.threads)]
    command += ["--energy", str(args.energy), "--device", args.device]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model}/{path} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        f"{'model':<20} {'path':<9} {'seconds':>8} {'speedup':>8} {'peak RSS MiB':>12} "
        f"{'+ in compress':>13} ranks",
        "-" * 86,
    ]
    for row in rows:
        lines.append(
            f"{row['model']:<20} {row['path']:<9} {row['seconds']:>8.2f} "
            f"{row['speedup']:>7.2f}x {row['peak_rss_mib']:>12.0f} "
            f"{row['peak_rss_mib'] - row['rss_before_mib']:>13.0f} {row['ranks_match']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="registry names")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--energy", type=float, default=0.9, help="energy (default: 0.9)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decompose_speed.json"))
    parser.add_argument("--case", nargs=2, metavar=("MODEL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        import torch

        torch.set_num_threads(args.threads)
        row = run_case(*args.case, energy=args.energy, device=args.device)
        print(json.dumps(row))
        return
    paths = ["ours", *[p for p in args.paths if p != "ours"]]
    rows: list[dict] = []
    for model in args.models:
        found = [_child(args, model, path) for path in paths]
        for row in found:
            row["speedup"] = row["seconds"] / found[0]["seconds"]
            row["ranks_match"] = "same" if row["ranks"] == found[0]["ranks"] else "DIFFERENT"
            print(f"{model} {row['path']}: {row['seconds']:.2f} s", file=sys.stderr, flush=True)
        rows += found
        _write(args, rows)
    print(table(rows))


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    result = {
        "threads": args.threads,
        "energy": args.energy,
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "load_average": os.getloadavg(),
        "note": "speedup = seconds of the path / seconds of ours, same run",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
