"""Zero-shot accuracy of data-aware HT-2 on CIFAR-10 ResNets: no gradient step, N images.

Run: python benchmarks/zeroshot.py --data DIR [--nets cifar10_resnet20,cifar10_resnet56]
         [--energies 0.9,0.8,0.7] [--images 128,512,2048] [--threads 1] [--out benchmarks/results]

DIR is the CIFAR-10 JPEG tree (train/, test/). For each net and energy: plain HT-2, and for
each N: plain + BatchNorm calibration on N training images, then `--data-aware` whiten, refit
and both (BN calibration decided on held-out calibration images). Top-1 on all of test/;
seconds are the compression call alone (images already decoded). Writes zeroshot-<net>.json
after every run (kept runs are skipped with --resume) and zeroshot.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from shared_weights import WEIGHTS  # benchmarks/ is on sys.path when run as a script

import ht2
from ht2.data import eval_dataset, make_loader, train_dataset
from ht2.dataaware import DataAwareOptions, compress_data_aware
from ht2.dataaware.holdout import recalibrate
from ht2.metrics.accuracy import evaluate_accuracy

MODES = ("whiten", "refit", "both")
EXAMPLE = torch.zeros(1, 3, 32, 32)


def calibration_images(data: str, entry, count: int) -> torch.Tensor:
    """`count` class-balanced training images (evaluation transform) in memory."""
    loader = make_loader(train_dataset(data, entry, augment=False, limit=count), 256, 0)
    return torch.cat([images for images, _ in loader])


def top1(model, test_loader) -> float:
    return evaluate_accuracy(model, test_loader, progress=False)["top1"]


def run_plain(base, energy, test_loader, images=None) -> dict:
    model = copy.deepcopy(base)
    start = time.perf_counter()
    report = ht2.compress(model, energy=energy, example_input=EXAMPLE)
    if images is not None:
        recalibrate(model, images, 256)
    seconds = time.perf_counter() - start
    return {"top1": top1(model, test_loader), "seconds": seconds, "x": report.param_reduction}


def run_data_aware(base, energy, mode, images, test_loader) -> dict:
    model = copy.deepcopy(base)
    start = time.perf_counter()
    report = compress_data_aware(
        model,
        images.split(256),
        energy=energy,
        calib_images=len(images),
        options=DataAwareOptions(mode=mode),
        example_input=EXAMPLE,
    )
    seconds = time.perf_counter() - start
    summary = report.data_aware
    return {
        "top1": top1(model, test_loader),
        "seconds": seconds,
        "x": report.param_reduction,
        "bn_calibration": summary["bn_calibration"],
        "held_out_agreement": summary.get("agreement"),
        "calib_errors": {layer.name: layer.calib_errors for layer in report.replaced},
    }


def table(results: dict) -> str:
    lines = [
        "| net | e | params x | N | plain | plain + BN | whiten | refit | both | s (both) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for net, runs in results.items():
        for key, plain in runs.items():
            if not key.endswith("/plain"):
                continue
            energy = key.split("/")[0]
            for n in sorted({int(k.split("/")[1]) for k in runs if k.count("/") == 2}):
                cells = [runs.get(f"{energy}/{n}/{what}") for what in ("bn", *MODES)]
                shown = [f"{c['top1']:.2f}" if c else "-" for c in cells]
                both = cells[-1]
                seconds = f"{both['seconds']:.1f}" if both else "-"
                lines.append(
                    f"| {net} | {energy} | {plain['x']:.2f}x | {n} | {plain['top1']:.2f} | "
                    + " | ".join(shown)
                    + f" | {seconds} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--nets", default="cifar10_resnet20,cifar10_resnet56")
    parser.add_argument("--energies", default="0.9,0.8,0.7")
    parser.add_argument("--images", default="128,512,2048")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="skip runs already in the JSON")
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for net in args.nets.split(","):
        path = args.out / f"zeroshot-{net}.json"
        runs = json.loads(path.read_text())["runs"] if args.resume and path.exists() else {}
        results[net] = runs
        entry = ht2.models.get_entry(net)
        base = ht2.models.create(net, weights=args.shared / "weights" / WEIGHTS[net]).eval()
        test_loader = make_loader(eval_dataset(args.data, entry, cache=True), 500, 0)
        runs.setdefault("original", {"top1": top1(base, test_loader)})
        counts = [int(n) for n in args.images.split(",")]
        pools = {n: calibration_images(args.data, entry, n) for n in counts}
        for energy in [float(e) for e in args.energies.split(",")]:
            jobs = [(f"{energy}/plain", None, None)]
            for n in counts:
                jobs.append((f"{energy}/{n}/bn", n, None))
                jobs += [(f"{energy}/{n}/{mode}", n, mode) for mode in args.modes.split(",")]
            for key, n, mode in jobs:
                if key in runs:
                    continue
                if mode is None:
                    runs[key] = run_plain(base, energy, test_loader, pools.get(n))
                else:
                    runs[key] = run_data_aware(base, energy, mode, pools[n], test_loader)
                done = runs[key]
                print(
                    f"{net} {key}: top-1 {done['top1']:.2f} ({done['seconds']:.1f} s)", flush=True
                )
                meta = {"net": net, "threads": args.threads, "torch": torch.__version__}
                path.write_text(json.dumps({**meta, "runs": runs}, indent=1))
    markdown = table(results)
    (args.out / "zeroshot.md").write_text(markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
