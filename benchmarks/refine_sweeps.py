"""What --refine-sweeps buys: HT-2 weight error against ALS sweeps, and what a sweep costs.

Run: OMP_NUM_THREADS=1 python benchmarks/refine_sweeps.py [--sweeps 0,1,3,10,50] [--threads 1]

For every HT-2 layer of ResNet-20 (the shared weights in ../shared/weights when present, else a
random init, said in the output) at the ranks the spectrum allocation gives at 2.6x fewer
parameters: the relative weight error after each number of sweeps. Then the seconds to
decompose one random 512 x 512 x 3 x 3 kernel (energy 0.8) with 0 and 10 sweeps, best of
--repeats. Prints a Markdown table and writes results/refine_sweeps.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from paths import portable  # benchmarks/ is on sys.path when run as a script
from shared_weights import WEIGHTS

import ht2
from ht2.decomp import HT2Ranks
from ht2.decomp.ht2 import ht2_decompose
from ht2.surgery.allocate import allocate
from ht2.surgery.targets import Target

NET = "cifar10_resnet20"


def _counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def layer_errors(model: torch.nn.Module, sweeps: list[int]) -> dict[str, list[float]]:
    """Relative weight error of each HT-2 layer at its spectrum ranks (2.6x), per sweep count."""
    example = torch.zeros(1, 3, 32, 32)
    chosen = allocate(model, "ht2", Target("params", 2.6), "spectrum", example)
    errors = {}
    for name, ranks in chosen.layer_ranks.items():
        if set(ranks) != {"r1", "r13", "r3"}:
            continue  # the first conv and the classifier are SVD layers
        weight = model.get_submodule(name).weight.detach()
        typed = HT2Ranks(ranks["r1"], ranks["r13"], ranks["r3"])
        errors[name] = [ht2_decompose(weight, ranks=typed, sweeps=n).rel_error for n in sweeps]
    return errors


def sweep_seconds(sweeps: int, repeats: int) -> float:
    """Best-of-`repeats` seconds to decompose a random 512 x 512 x 3 x 3 kernel at e = 0.8."""
    kernel = torch.randn(512, 512, 3, 3, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ht2_decompose(kernel, energy=0.8, sweeps=sweeps)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=_counts, default=[0, 1, 3, 10, 50])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = args.shared / "weights" / WEIGHTS[NET]
    source = portable(weights) if weights.is_file() else "random init"
    model = ht2.models.create(NET, weights=weights if weights.is_file() else None).eval()
    errors = layer_errors(model, args.sweeps)
    lines = [
        f"{NET} ({source}), HT-2 at the spectrum ranks for 2.6x: relative weight error",
        "",
        "| layer | " + " | ".join(f"{n} sweeps" for n in args.sweeps) + " |",
        "|---|" + "---:|" * len(args.sweeps),
    ]
    for name, row in errors.items():
        lines.append(f"| {name} | " + " | ".join(f"{e:.4f}" for e in row) + " |")
    means = [sum(row[i] for row in errors.values()) / len(errors) for i in range(len(args.sweeps))]
    lines.append("| mean | " + " | ".join(f"{m:.4f}" for m in means) + " |")
    seconds = {n: sweep_seconds(n, args.repeats) for n in (0, 10)}
    lines += [
        "",
        f"512x512x3x3 kernel, e = 0.8, {torch.get_num_threads()} thread(s), best of "
        f"{args.repeats}: {seconds[0]:.2f} s with 0 sweeps, {seconds[10]:.2f} s with 10",
    ]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "weights": source,
        "sweeps": args.sweeps,
        "errors": errors,
        "mean": means,
        "seconds_512": seconds,
        "threads": torch.get_num_threads(),
        "table": "\n".join(lines),
    }
    (args.out / "refine_sweeps.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
