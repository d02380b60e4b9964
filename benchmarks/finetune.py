"""Fine-tuning recovery of a compressed CIFAR-10 ResNet on this CPU, with and without distillation.

Run: python benchmarks/finetune.py --data DIR [--net cifar10_resnet20] [--energy 0.7]
         [--runs c1,d1,c5,u5,d5] [--work /tmp/ht2-finetune] [--out benchmarks/results]

DIR is the CIFAR-10 JPEG tree (train/, test/). Runs, in order (each a separate one-cycle run):
c1/c2/c5: the compressed model fine-tuned for 1/2/5 epochs; d1/d5: the same with --distill;
u1/u5: the uncompressed model fine-tuned with the same recipe (the like-for-like baseline,
since training on the JPEG train/ folder lifts it on the JPEG test/ folder too).
Recipe: SGD Nesterov, one-cycle max lr 0.01, wd 3e-4, batch 128; BN calibration first
(2,048 images). Writes finetune-<net>-e<energy>.json after every run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from shared_weights import WEIGHTS  # benchmarks/ is on sys.path when run as a script

import ht2
from ht2.cli.main import main as ht2_main

RECIPE = [
    "--lr",
    "0.01",
    "--wd",
    "3e-4",
    "--batch-size",
    "128",
    "--schedule",
    "onecycle",
    "--nesterov",
    "--workers",
    "2",
]


def run_cli(args: list[str]) -> None:
    code = ht2_main(args)
    if code != 0:
        raise SystemExit(f"ht2 {' '.join(args)} failed with exit code {code}")


def log_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--net", default="cifar10_resnet20", choices=sorted(WEIGHTS))
    parser.add_argument("--energy", type=float, default=0.7)
    parser.add_argument("--runs", default="c1,d1,c5,u5,d5")
    parser.add_argument(
        "--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/ht2-finetune"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    weights = args.shared / "weights" / WEIGHTS[args.net]
    work = args.work / f"{args.net}-e{args.energy}"
    compressed = work / "compressed"
    run_cli(
        [
            "compress",
            args.net,
            "--weights",
            str(weights),
            "--energy",
            str(args.energy),
            "--out",
            str(compressed),
            "--force",
            "--json",
        ]
    )
    report = json.loads((compressed / "report.json").read_text())
    result = {
        "net": args.net,
        "energy": args.energy,
        "recipe": " ".join(RECIPE),
        "param_reduction": report["param_reduction"],
        "torch_threads": torch.get_num_threads(),
        "runs": {},
    }
    path = args.out / f"finetune-{args.net}-e{args.energy}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    for run in args.runs.split(","):
        kind, epochs = run[0], run[1:]
        source = compressed
        if kind == "u":
            source = work / "uncompressed"
            model = ht2.models.create(args.net, weights=weights)
            ht2.save(model, source, overwrite=True)
        extra = ["--distill"] if kind == "d" else []
        out = work / run
        start = time.perf_counter()
        run_cli(
            [
                "finetune",
                str(source),
                "--data",
                args.data,
                "--epochs",
                epochs,
                *RECIPE,
                *extra,
                "--out",
                str(out),
                "--force",
            ]
        )
        lines = log_of(out)
        result["runs"][run] = {
            "kind": {"c": "compressed", "d": "compressed + distill", "u": "uncompressed"}[kind],
            "epochs": int(epochs),
            "seconds": time.perf_counter() - start,
            "top1_by_epoch": {line["epoch"]: line["top1"] for line in lines},
            "seconds_per_epoch": [line["seconds"] for line in lines if "seconds" in line],
        }
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(
            f"{run}: "
            + ", ".join(
                f"epoch {e}: {t:.2f} %" for e, t in result["runs"][run]["top1_by_epoch"].items()
            ),
            flush=True,
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
