"""The weights shipped in the package, measured: top-1 on the data's test split, size, and (when
the run's log is given) how training got there.

Run:
    python benchmarks/bundled.py --data DATA [--train-log cifar10_resnet56=RUN/log.jsonl]

Every model whose weights are bundled (`src/ht2/models/pretrained/`) is evaluated with
`ht2 evaluate NET --pretrained --data DATA --json`. A training log (the log.jsonl that `ht2 train`
writes) adds each epoch's top-1 and seconds; a net measured before keeps its old log when none is
given. Writes benchmarks/results/bundled.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from paths import portable, write_json

from ht2 import models
from ht2.metrics.counting import count_params
from ht2.metrics.speedup import total_macs
from ht2.models.bundled import PRETRAINED_DIR

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bundled.json"
TRAIN_COMMAND = "ht2 train {net} --data DATA --recipe resnet-cifar10 --out RUN"


def _log(text: str) -> tuple[str, Path]:
    net, sep, path = text.partition("=")
    if not sep or not net or not path:
        raise argparse.ArgumentTypeError(f"expected NET=FILE, not {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"no such training log: {path}")
    return net, Path(path)


def epochs_of(path: Path) -> list[dict[str, Any]]:
    """Epoch, top-1 and seconds of every line of an `ht2 train` log.jsonl."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [
        {"epoch": line["epoch"], "top1": line["top1"], "seconds": round(line["seconds"], 1)}
        for line in lines
        if "epoch" in line and "top1" in line
    ]


def measure(net: str, data: str, threads: int | None) -> dict[str, Any]:
    """Top-1/top-5 of the bundled weights (through the CLI, as a user runs it), params, MACs."""
    command = [sys.executable, "-m", "ht2", "evaluate", net, "--pretrained", "--data", data]
    command += ["--json"] + (["--threads", str(threads)] if threads else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{net}: ht2 evaluate failed: {done.stderr.strip()}")
    scores = json.loads(done.stdout)
    model = models.create(net, weights="pretrained").eval()
    with torch.no_grad():
        macs = total_macs(model, (3, 32, 32))
    return {
        "net": net,
        "top1": scores["top1"],
        "top5": scores["top5"],
        "params": count_params(model),
        "macs": macs,
        "train_command": TRAIN_COMMAND.format(net=net),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 folder or .tar.gz with test/")
    parser.add_argument("--train-log", type=_log, action="append", default=[], metavar="NET=FILE")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"(default: {RESULTS})")
    args = parser.parse_args(argv)
    old = json.loads(args.results.read_text()) if args.results.is_file() else {"nets": []}
    old_logs = {row["net"]: row.get("epochs") for row in old["nets"]}
    logs = dict(args.train_log)
    rows = []
    for path in sorted(PRETRAINED_DIR.glob("cifar10_*.safetensors")):
        row = measure(path.stem, args.data, args.threads)
        given = logs.get(row["net"])
        row["epochs"] = epochs_of(given) if given else old_logs.get(row["net"])
        rows.append(row)
        print(f"{row['net']}: top-1 {row['top1']:.2f} %, {row['params']:,} params")
    settings = {"data": portable(args.data), "threads": args.threads}
    write_json(args.results, {"settings": settings, "nets": rows})
    print(f"wrote {portable(args.results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
