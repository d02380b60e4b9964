"""The paper table's models, timed: how much faster each row's model runs than the base it is
compared with, best against best, so that accuracy and speed are read off one table.

Run (resumable: a row timed already with the same settings is skipped; --again retimes):
    python benchmarks/table_speed.py --threads 1                 # every row whose model exists
    python benchmarks/table_speed.py --rows '*/3.8x/*' --batch-sizes 1,128

A row's speed does not depend on its fine-tuned weights, only on its architecture, so each row
is timed from the model `paper_table.py` compressed or pruned (its work folder's `compressed/`),
as soon as it exists. Each is timed against the base network (the bundled weights, dense) in
every treatment of --runtimes (dtype x memory format, BatchNorms folded on both sides), the two
run by run in turn in this process (ht2.metrics.like_for_like.compare_speed); per batch size the
row records the best against the best (each model in its own fastest treatment) and the fastest
like-for-like pair. Writes benchmarks/results/paper_table_speed.json after every row; the report
joins it to paper_table.json by row key.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import paths
import torch
from paper_table import slug_of
from paths import ROOT, portable
from paths import write_json as write_atomically  # benchmarks/ is on sys.path when run as a script
from reporting.base import TABLE_OWN, variant_of

BENCHMARK = "table_speed"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "paper_table_speed.json"
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "paper_table.json"
DEFAULT_WORK = Path.home() / ".cache" / "ht2" / "paper_table"
DEFAULT_RUNTIMES = "eager,openvino"


def rows_to_time(results: Path, patterns: list[str] | None) -> list[dict[str, Any]]:
    """The rows of the paper table (JSON) that --rows picks, base rows left out (they are the
    baseline), and rows fine-tuned at a learning rate or batch size of their own (their model is
    compressed as the table's own row's is: its timing serves both)."""
    if not results.is_file():
        raise SystemExit(f"table_speed: {portable(results)} does not exist; run paper_table.py")
    rows = json.loads(results.read_text(encoding="utf-8")).get("rows", [])
    picked = [row for row in rows if row["pipeline"] != "base" and variant_of(row) == TABLE_OWN]
    if patterns:
        picked = [r for r in picked if any(fnmatch.fnmatch(r["key"], p) for p in patterns)]
    return picked


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two timings of a row comparable; a row timed with others is timed again."""
    return {
        "batch_sizes": args.batch_sizes,
        "runtimes": args.runtimes,
        "threads": args.threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
    }


def read_timed(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"benchmark": BENCHMARK, "rows": []}
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("benchmark") != BENCHMARK:
        raise SystemExit(f"table_speed: {portable(path)} holds other results; give --out")
    return data


def time_row(row: dict[str, Any], folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One row's compressed model against its base network, every treatment, every batch."""
    import ht2
    from ht2.metrics.like_for_like import compare_speed, treatment_matrix

    model = ht2.load(folder).eval()
    base = ht2.models.create(row["net"], weights="pretrained").eval()
    input_size = ht2.models.get_entry(row["net"]).input_size
    every, notes = treatment_matrix(torch.device("cpu"), fold_bn=True)
    treatments = [t for t in every if t.runtime in args.runtimes.split(",")]
    if not treatments:
        raise SystemExit(f"table_speed: no treatment of --runtimes {args.runtimes} runs here")
    load_before = os.getloadavg()[0]
    measured = compare_speed(
        model,
        base,
        input_size,
        treatments,
        [int(size) for size in args.batch_sizes.split(",")],
        "cpu",
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        mark=True,
        names=(f"{row['key']} compressed", f"the base {row['net']}"),
    )
    return {
        "key": row["key"],
        "macs_x": measured.baseline_macs / max(measured.macs, 1),
        "best": measured.best,
        "rows": measured.rows,
        "notes": notes,
        "settings": settings_of(args),
        "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def summary_line(timed: dict[str, Any]) -> str:
    parts = []
    for best in timed["best"]:
        pair = best["best_against_best"]
        parts.append(f"batch {best['batch_size']}: {pair['speedup']:.2f}x")
    return f"{timed['key']}: {', '.join(parts)} best against best ({timed['macs_x']:.2f}x MACs)"


SUBSET_FLAGS = {"--rows": 1, "--again": 0}  # which rows a run times, and how many values


def command_line(argv: list[str]) -> str:
    """The command that fills the whole column as this run times: its argv without the flags
    that pick which rows run (the column gathers several runs)."""
    return paths.command_line("python benchmarks/table_speed.py", argv, drop=SUBSET_FLAGS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="paper_table JSON")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="paper_table's --work")
    parser.add_argument("--rows", help="comma list of globs on row keys (default: every row)")
    parser.add_argument("--batch-sizes", default="1,128", help="comma list (default: 1,128)")
    parser.add_argument(
        "--runtimes",
        default=DEFAULT_RUNTIMES,
        help=f"comma list of eager, compile, onnxruntime, openvino (default: {DEFAULT_RUNTIMES})",
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed runs (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default: 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    parser.add_argument("--again", action="store_true", help="retime rows timed already")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = rows_to_time(args.results, args.rows.split(",") if args.rows else None)
    data = read_timed(args.out)
    data.update(
        benchmark=BENCHMARK,
        command=command_line(argv if argv is not None else sys.argv[1:]),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
    )
    timed = {entry["key"]: entry for entry in data["rows"]}
    for row in rows:
        previous = timed.get(row["key"])
        if previous and previous["settings"] == settings_of(args) and not args.again:
            print(f"{row['key']}: timed already, skipped", flush=True)
            continue
        folder = args.work / slug_of(row["key"]) / "compressed"
        if not (folder / "ht2.json").is_file():
            print(f"{row['key']}: no compressed model in {portable(folder)}, skipped", flush=True)
            continue
        timed[row["key"]] = time_row(row, folder, args)
        data["rows"] = sorted(timed.values(), key=lambda entry: entry["key"])
        write_atomically(args.out, data)
        print(summary_line(timed[row["key"]]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
