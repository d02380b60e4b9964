"""Seconds and peak memory to compress whole models, ht2's decomposition against baselines.

Run: python benchmarks/decompose_speed.py [--threads 1 [2 ...]] [--models vgg16_bn resnet50 ...]
                                          [--paths ours float64 full_svd unsized] [--device cpu]
                                          [--sweeps 0] [--rounds 1]
Each (model, threads, path) runs in its own subprocess, so peak RSS is per case. Paths:
  ours      what ht2 does: float32 Gram + eigen-solve for float32 weights, ranks checked
            against the float64 rule near their threshold; operations on fewer than
            ht2.decomp.threads.LARGE_NUMEL elements on one thread;
  float64   the same algorithm entirely in float64 (what ht2 did before);
  full_svd  a plain baseline: torch.linalg.svd(full_matrices=False) in float64 per unfolding;
  unsized   ours with every operation on all --threads whatever its size (ht2 before threads
            per operation size).
Random init, e = 0.9, `ht2.compress` with --sweeps ALS refine sweeps. With several --threads or
--rounds, the cases take turns (round by round, each thread count, each path), so a load that
changes meanwhile hits them alike; every row records the 1-minute load average before it.
Ranks of every path are compared to `ours` at the same threads and round; speedup = seconds of
the path / seconds of ours there. JSON "threads" is the count, or the list of counts given.
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

from paths import write_json  # benchmarks/ is on sys.path when run as a script

MODELS = ("vgg16_bn", "resnet50", "googlenet", "cifar10_densenet40")
PATHS = ("ours", "float64", "full_svd", "unsized")
DECOMP_MODULES = ("ht2.decomp.svd", "ht2.decomp.ht2", "ht2.decomp.tucker2")


def _patch(path: str) -> None:
    """Swap the spectrum routine of the decompositions for a baseline's, or (unsized) keep
    every operation on the threads set."""
    import importlib

    if path == "unsized":
        from ht2.decomp import threads

        threads.LARGE_NUMEL = 0
        return

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


def run_case(model_name: str, path: str, energy: float, device: str, sweeps: int = 0) -> dict:
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
    load = os.getloadavg()[0]
    report = ht2.compress(model, energy=energy, example_input=example, refine_sweeps=sweeps)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {
        "model": model_name,
        "path": path,
        "threads": torch.get_num_threads(),
        "sweeps": sweeps,
        "load_before": load,
        "seconds": seconds,
        "peak_rss_mib": rss_after / 1024,
        "rss_before_mib": rss_before / 1024,
        "ranks": {layer.name: layer.ranks for layer in report.replaced},
        "params_after": report.params_after,
    }
    if device.startswith("cuda"):
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def _child(args: argparse.Namespace, model: str, path: str, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--case", model, path, "--threads", str(threads)]
    command += ["--energy", str(args.energy), "--device", args.device, "--sweeps", str(args.sweeps)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model}/{path} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        f"{'model':<20} {'path':<9} {'threads':>7} {'round':>5} {'load':>5} {'seconds':>8} "
        f"{'speedup':>8} {'peak RSS MiB':>12} {'+ in compress':>13} ranks",
        "-" * 107,
    ]
    for row in rows:
        lines.append(
            f"{row['model']:<20} {row['path']:<9} {row['threads']:>7} {row['round']:>5} "
            f"{row['load_before']:>5.1f} {row['seconds']:>8.2f} "
            f"{row['speedup']:>7.2f}x {row['peak_rss_mib']:>12.0f} "
            f"{row['peak_rss_mib'] - row['rss_before_mib']:>13.0f} {row['ranks_match']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1], help="torch thread counts (default: 1)"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="registry names")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--energy", type=float, default=0.9, help="energy (default: 0.9)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--sweeps", type=int, default=0, help="ALS refine sweeps (default: 0)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (default: 1)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decompose_speed.json"))
    parser.add_argument("--case", nargs=2, metavar=("MODEL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        import torch

        torch.set_num_threads(args.threads[0])
        row = run_case(*args.case, energy=args.energy, device=args.device, sweeps=args.sweeps)
        print(json.dumps(row))
        return
    paths = ["ours", *[p for p in args.paths if p != "ours"]]
    rows: list[dict] = []
    for model in args.models:
        for turn in range(1, args.rounds + 1):
            for threads in args.threads:
                found = [_child(args, model, path, threads) for path in paths]
                for row in found:
                    row["round"] = turn
                    row["speedup"] = row["seconds"] / found[0]["seconds"]
                    same = row["ranks"] == found[0]["ranks"]
                    row["ranks_match"] = "same" if same else "DIFFERENT"
                    print(
                        f"{model} {row['path']} {threads} thread(s), round {turn}: "
                        f"{row['seconds']:.2f} s (load {row['load_before']:.1f})",
                        file=sys.stderr,
                        flush=True,
                    )
                rows += found
                _write(args, rows)
    print(table(rows))


def _write(args: argparse.Namespace, rows: list[dict]) -> None:
    result = {
        "threads": args.threads[0] if len(args.threads) == 1 else args.threads,
        "sweeps": args.sweeps,
        "rounds": args.rounds,
        "energy": args.energy,
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "load_average": os.getloadavg(),
        "note": "speedup = seconds of the path / seconds of ours, same run",
        "rows": rows,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
