"""Inference latency of CIFAR-10 ResNet-20: original, compressed, BatchNorms folded, ONNX Runtime.

Run: python benchmarks/inference_speed.py [--energies 0.9,0.7] [--batch-sizes 1,128]
     [--threads 1] [--repeats 20] [--out DIR]
Compresses the bundled pretrained ResNet-20 at each energy (HT-2, default policy), folds its
BatchNorms, exports that to ONNX, and times the four in turn, run by run, in one process
(`ht2.metrics.time_models`); ONNX Runtime gets the same thread count. Prints a table and
writes inference_speed.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import ht2
from ht2.export import OrtRunner, check_onnx, export_onnx, fold_batchnorms
from ht2.metrics import time_models

NET = "cifar10_resnet20"
VARIANTS = ("original", "compressed", "folded", "onnxruntime")


def measure(energy: float, sizes: list[int], threads: int, repeats: int, warmup: int) -> list:
    """One row per batch size: the median and IQR of each variant, speedups over the original."""
    original = ht2.models.create(NET, weights="pretrained")
    input_size = ht2.models.get_entry(NET).input_size
    compressed = ht2.models.create(NET, weights="pretrained")
    report = ht2.compress(compressed, energy=energy, example_input=torch.zeros(1, *input_size))
    folded, fold = fold_batchnorms(compressed, input_size)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(folded, input_size, path)
        check = check_onnx(folded, path, input_size, threads=threads)
        runner = OrtRunner(path, threads)
        rows = []
        for size in sizes:
            x = torch.randn(size, *input_size)
            timings = time_models(
                [original, compressed.eval(), folded.eval(), runner], x, repeats, warmup, threads
            )
            row = {"energy": energy, "batch_size": size, "mac_reduction": report.mac_reduction}
            for name, timing in zip(VARIANTS, timings, strict=True):
                row[f"{name}_ms"] = timing.median_ms
                row[f"{name}_iqr_ms"] = timing.iqr_ms
                row[f"{name}_min_ms"] = timing.min_ms
                row[f"{name}_speedup"] = timings[0].median_ms / timing.median_ms
            row["folded_bn"] = len(fold.folded)
            row["fold_max_abs_diff"] = fold.max_abs_diff
            row["onnx_max_abs_diff"] = check.max_abs_diff
            rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print(
        f"{'e':>4} {'batch':>5} {'MAC x':>6} "
        + " ".join(f"{name + ' ms':>14} {'x':>5}" for name in VARIANTS)
    )
    for r in rows:
        cells = " ".join(f"{r[f'{n}_ms']:>14.3f} {r[f'{n}_speedup']:>5.2f}" for n in VARIANTS)
        print(f"{r['energy']:>4} {r['batch_size']:>5} {r['mac_reduction']:>6.2f} {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--energies", default="0.9,0.7", help="default: 0.9,0.7")
    parser.add_argument("--batch-sizes", default="1,128", help="default: 1,128")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs (default: 3)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    rows = [
        row
        for energy in (float(e) for e in args.energies.split(","))
        for row in measure(energy, sizes, args.threads, args.repeats, args.warmup)
    ]
    print_table(rows)
    print(
        f"median ms per batch of {args.repeats} runs in turn after {args.warmup} warm-up runs, "
        f"{args.threads} thread(s); x: speedup over the original"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "inference_speed.json"
    result = {
        "model": NET,
        "weights": "pretrained (bundled)",
        "threads": args.threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "rows": rows,
    }
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
