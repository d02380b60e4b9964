"""The paper's table, measured here: each size compressed by the paper's pipeline and by the best
one, rivals beside them, every model fine-tuned for the same E epochs, against the base model
fine-tuned the same way.

Run (resumable: rerun the same command after a stop; each row is written as it finishes):
    nohup python benchmarks/paper_table.py --data DATA --threads 2 > paper_table.log 2>&1 &
    python benchmarks/paper_table.py --data DATA --dry-run        # the rows, and which are done
    python benchmarks/paper_table.py --table                      # the Markdown, from the JSON only
    python benchmarks/paper_table.py --data DATA --rows '*/best/ht2/*'   # a subset (globs on keys)
    python benchmarks/paper_table.py --data DATA --device cuda --epochs 200 --workers 8
        # a GPU's long schedule: its rows (a base row too) are keyed by E, a table of their own

Rows, per net (the bundled `cifar10_resnet20 --pretrained` and `cifar10_resnet56 --pretrained`,
or other weights given by --weights cifar10_resnet56=FILE):
  base   the uncompressed model, fine-tuned like every other row (the like-for-like reference)
  paper  `ht2 compress --recipe paper --target-params X`: one energy for all layers, one-pass
         HT-2 factors, no data
  best   `ht2 compress --recipe best --target-params X --data DATA` (sensitivity allocation,
         10 ALS sweeps, data-aware refit, BatchNorm re-estimation decided on held-out images)
  rivals Tucker-2 and CP by the best pipeline at two of the sizes; for ResNet-20, CP at 5.6x
         and 8.4x too (it won at both rival sizes)
  prune  `ht2 prune --target-params X` at every size: channel pruning (the filters with the
         smallest L1 norms, the same share of each block's inner channels)
Each folder is then `ht2 finetune --epochs E` (BN calibration kept where held-out training
images say it helps, distillation from the uncompressed model, one-cycle SGD; the base row
distils from a frozen copy of itself). Top-1 on the data's test split: before fine-tuning (the
model as compress or prune wrote it) and after the last epoch; delta is against the base row
of the same net, epochs, --lr, --batch-size and --ema (rows run with any of them set apart from
the default are a table of their own). The rows fine-tuned while that calibration was
unconditional (all those of 2026-12-02 and before) differ only in their epoch-0 figure: training
re-estimates the statistics from its first step.

Writes benchmarks/results/paper_table.json ({"rows": [...]}, replaced atomically after every
row) and paper_table.md. Work folders (compressed models, fine-tuning runs with their
checkpoints) go to ~/.cache/ht2/paper_table/ (--work); a half-done fine-tune resumes from its
last epoch's checkpoint. Several runs may share one table (say, one per core, --threads 1):
a row's work folder holds .running with its process id while it runs, and the others skip it.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paths import command_line, portable, write_text
from reporting.base import (
    EPOCH0_NOTE,
    TABLE_BATCH,
    fine_tune_of,
    model_key,
    target_cell,
    variant_of,
    variant_order,
    variant_phrase,
)

from ht2.cli.number_args import real_number, whole_number

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "paper_table.json"
WORK = Path.home() / ".cache" / "ht2" / "paper_table"
INTERRUPTED = (129, 130, 143)  # ht2's exit codes for SIGHUP, Ctrl-C, SIGTERM
PIPELINES = ("base", "paper", "best", "prune", "speed")
METHODS = ("dense", "ht2", "tucker2", "cp", "channels")
RIVALS = ("tucker2", "cp")


@dataclass(frozen=True)
class NetPlan:
    """The sizes (parameter reductions) a net is compressed to, those where both rivals run,
    and further sizes where CP alone runs (it won at the rival sizes)."""

    sizes: tuple[float, ...]
    rival_sizes: tuple[float, ...]
    cp_sizes: tuple[float, ...] = ()


NETS = {
    "cifar10_resnet20": NetPlan((1.5, 2.5, 3.8, 5.6, 8.4), (2.5, 3.8), (5.6, 8.4)),
    "cifar10_resnet56": NetPlan((1.5, 2.55, 4.0, 6.05, 9.05), (2.55, 4.0)),
}


def slug_of(key: str) -> str:
    """A row key's work folder name: cifar10_resnet20-best-ht2-3.8x-e10."""
    return key.replace("/", "-")


@dataclass(frozen=True)
class Row:
    """One run: a net, a pipeline, a method, a size and a number of fine-tuning epochs."""

    net: str
    pipeline: str
    method: str
    target: float  # parameter reduction asked for (1 for the base; speed rows: the speedup)
    epochs: int
    lr: float | None = None  # the fine-tune's peak learning rate; None: ht2 finetune's own
    batch: int | None = None  # the fine-tune's batch size; None: TABLE_BATCH
    ema: float | None = None  # the fine-tune's weight average (--ema); None: none kept

    @property
    def key(self) -> str:
        key = model_key(vars(self)) + ("" if self.lr is None else f"/lr{self.lr:g}")
        key += "" if self.batch is None else f"/b{self.batch}"
        return key + ("" if self.ema is None else f"/ema{self.ema:g}")

    @property
    def slug(self) -> str:
        return slug_of(self.key)


@dataclass
class Settings:
    """The command-line settings every row is run with (they are stored in each row)."""

    data: str | None
    epochs: int = 10
    lr: float | None = None  # the fine-tune's peak learning rate (None: its recipe's)
    ema: float | None = None  # the fine-tune's weight average decay (None: none kept)
    device: str = "auto"
    threads: int | None = None
    workers: int = 2
    batch_size: int = TABLE_BATCH
    calib_images: int | None = None
    max_steps: int | None = None
    train_limit: int | None = None
    eval_limit: int | None = None
    weights: dict[str, str] = field(default_factory=dict)
    speed_for: str = "openvino,bfloat16,128"  # speed rows: runtime, dtype, batch size timed

    def source(self, net: str) -> list[str]:
        """The weights flags of `net`: a file given by --weights, else the bundled ones."""
        return ["--weights", self.weights[net]] if net in self.weights else ["--pretrained"]

    def to_dict(self) -> dict[str, Any]:
        """The settings as the JSON records them: paths portable (../shared/..., ~/...)."""
        data = dict(vars(self))
        data["data"] = portable(self.data) if self.data else None
        data["weights"] = {net: portable(path) for net, path in self.weights.items()}
        return data


def plan_rows(
    nets: list[str],
    epochs: int,
    speedups: tuple[float, ...] = (),
    lr: float | None = None,
    batch: int | None = None,
    ema: float | None = None,
) -> list[Row]:
    """Every row of the table, in the order they run: each net's base first (so deltas fill as
    rows arrive), then each size by the paper's and the best pipeline, then the rivals (CP at
    its further sizes too), then channel pruning at each size, then (only when asked for) HT-2
    compressed for `speedups`.
    A fine-tuning `lr`, `batch` or `ema` of its own makes a table of its own, with its own base
    row."""
    tuned = {"epochs": epochs, "lr": lr, "batch": batch, "ema": ema}
    rows = []
    for net in nets:
        plan = NETS[net]
        rows.append(Row(net, "base", "dense", 1.0, **tuned))
        for size in plan.sizes:
            rows += [Row(net, pipeline, "ht2", size, **tuned) for pipeline in ("paper", "best")]
        rows += [
            Row(net, "best", rival, size, **tuned) for size in plan.rival_sizes for rival in RIVALS
        ]
        rows += [Row(net, "best", "cp", size, **tuned) for size in plan.cp_sizes]
        rows += [Row(net, "prune", "channels", size, **tuned) for size in plan.sizes]
        rows += [Row(net, "speed", "ht2", speedup, **tuned) for speedup in speedups]
    return rows


def pick(rows: list[Row], patterns: list[str] | None) -> list[Row]:
    """The rows whose key matches one of the glob `patterns` (all rows without patterns)."""
    if not patterns:
        return rows
    return [row for row in rows if any(fnmatch.fnmatchcase(row.key, p) for p in patterns)]


# --- results: one JSON of rows, written whole after every row, and its Markdown ---------------


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("rows", [])


def fill_deltas(rows: list[dict[str, Any]]) -> None:
    """Each row's top-1 after fine-tuning minus its net's base row's, fine-tuned the same way
    (None until that base row exists)."""
    base = {fine_tune_of(r): r["top1_after"] for r in rows if r["pipeline"] == "base"}
    for row in rows:
        reference = base.get(fine_tune_of(row))
        row["delta"] = None if reference is None else round(row["top1_after"] - reference, 2)


def write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    """Refresh every delta of `rows`, then write them as JSON and as Markdown beside it."""
    fill_deltas(rows)
    write_text(path, json.dumps({"rows": rows}, indent=1) + "\n")
    write_text(path.with_suffix(".md"), markdown(rows))


def store_row(path: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Add (or replace) `row` in the results and write the table again."""
    rows = [r for r in read_results(path) if r["key"] != row["key"]] + [row]
    write_table(path, rows)
    return rows


def _order(row: dict[str, Any]) -> tuple:
    return (
        row["net"],
        row["epochs"],
        variant_order(variant_of(row)),  # the table's own fine-tune settings first
        row["pipeline"] == "speed",  # speed rows last: their target is a speedup, not a size
        row["target"],
        PIPELINES.index(row["pipeline"]) if row["pipeline"] in PIPELINES else 9,
        METHODS.index(row["method"]) if row["method"] in METHODS else 9,
    )


def _number(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """One table per net and epoch count, the way the paper reports."""
    lines = ["# The paper's table, measured here (`python benchmarks/paper_table.py`)", ""]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=_order):
        groups.setdefault(fine_tune_of(row), []).append(row)
    for (net, epochs, variant), members in groups.items():
        lines += [
            f"## {net}, {epochs} epochs of fine-tuning{variant_phrase(variant)}",
            "",
            f"| pipeline | method | target | params x | MACs x | top-1 before | top-1 after "
            f"{epochs} ep | delta vs base | minutes |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in members:
            target = target_cell(row)
            lines.append(
                f"| {row['pipeline']} | {row['method']} | {target} | "
                f"{_number(row['params_x'])}x | {_number(row['macs_x'])}x | "
                f"{_number(row['top1_before'])} | {_number(row['top1_after'])} | "
                f"{_number(row['delta'], sign=True)} | {_number(row['minutes'], 1)} |"
            )
        lines.append("")
    lines.append(
        "Top-1 (%) on the test split. Before: the model as `ht2 compress` wrote it (base: the "
        "bundled weights). After: the last epoch of `ht2 finetune`. Delta: against the base row "
        "fine-tuned for the same epochs. Prune: `ht2 prune` (channel pruning), fine-tuned the "
        "same way. Speed: `ht2 compress --target-speedup X` (timed where the row's speed_for "
        "says: runtime, dtype, batch), fine-tuned the same way. Minutes: compressing, scoring "
        "and the fine-tune's training epochs, on a shared 2-core machine where other rows ran "
        "at the same time. " + EPOCH0_NOTE
    )
    return "\n".join(lines) + "\n"


# --- the stages of a row (each a separate function, so tests can stand in for them) ---------


def run_cli(argv: list[str]) -> None:
    """`ht2 ARGV` in this process; a stop (Ctrl-C, SIGTERM) stops the table too."""
    from ht2.cli.main import main as ht2_main

    code = ht2_main(argv)
    if code in INTERRUPTED:
        raise KeyboardInterrupt(f"ht2 {argv[0]} was stopped")
    if code != 0:
        raise SystemExit(f"paper_table: `ht2 {' '.join(argv)}` failed with exit code {code}")


def compress_args(row: Row, settings: Settings, out: Path) -> list[str]:
    if row.pipeline == "prune":
        argv = ["prune", row.net, *settings.source(row.net), "--target-params", f"{row.target:g}"]
        return [*argv, "--out", str(out), "--force"]
    if row.pipeline == "speed":
        runtime, dtype, batch = settings.speed_for.split(",")
        argv = ["compress", row.net, *settings.source(row.net), "--recipe", "paper"]
        argv += ["--method", row.method, "--target-speedup", f"{row.target:g}"]
        argv += ["--runtime", runtime, "--dtype", dtype, "--batch-size", batch]
        return [*argv, "--out", str(out), "--force"]
    argv = ["compress", row.net, *settings.source(row.net), "--recipe", row.pipeline]
    argv += ["--method", row.method, "--target-params", f"{row.target:g}"]
    if row.pipeline == "best":
        argv += ["--data", str(settings.data)]
        if settings.calib_images:
            argv += ["--calib-images", str(settings.calib_images)]
    return [*argv, "--out", str(out), "--force"]


def finetune_args(settings: Settings, source: Path, out: Path, resume: bool) -> list[str]:
    argv = ["finetune", str(source), "--data", str(settings.data)]
    argv += ["--epochs", str(settings.epochs), "--batch-size", str(settings.batch_size)]
    if settings.lr is not None:
        argv += ["--lr", f"{settings.lr:g}"]
    if settings.ema is not None:
        argv += ["--ema", f"{settings.ema:g}"]
    argv += ["--workers", str(settings.workers), "--device", settings.device]
    for flag, value in (
        ("--max-steps", settings.max_steps),
        ("--train-limit", settings.train_limit),
        ("--eval-limit", settings.eval_limit),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return [*argv, "--out", str(out), "--resume" if resume else "--force"]


def compress_row(row: Row, settings: Settings, out: Path) -> dict[str, float]:
    """The row's model folder in `out`; its parameter and MAC reductions."""
    if row.pipeline == "base":
        import ht2

        weights = settings.weights.get(row.net, "pretrained")
        ht2.save(ht2.models.create(row.net, weights=weights), out, overwrite=True)
        return {"params_x": 1.0, "macs_x": 1.0}
    run_cli(compress_args(row, settings, out))
    if row.pipeline == "prune":
        return measured_sizes(row.net, out)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    sizes = {"params_x": report["param_reduction"], "macs_x": report["mac_reduction"]}
    steps = (report.get("pipeline") or {}).get("steps", [])
    planned = [step["reached"] for step in steps if step.get("step") == "speed target"]
    if planned:
        sizes["speedup_planned"] = planned[0]
    return sizes


def measured_sizes(net: str, folder: Path) -> dict[str, float]:
    """Parameter and MAC reductions of the model folder against the uncompressed `net`."""
    import ht2
    from ht2.metrics.counting import count_params
    from ht2.metrics.speedup import total_macs

    base, model = ht2.models.create(net), ht2.load(folder)
    size = ht2.models.get_entry(net).input_size
    return {
        "params_x": count_params(base) / count_params(model),
        "macs_x": total_macs(base, size) / total_macs(model, size),
    }


def evaluate_row(folder: Path, settings: Settings) -> float:
    """Top-1 (%) of the model folder on the test split."""
    import ht2
    from ht2.data import eval_dataset, make_loader
    from ht2.device import resolve_device
    from ht2.metrics.accuracy import evaluate_accuracy

    model = ht2.load(folder)
    entry = ht2.models.get_entry(model.ht2_arch["name"])
    dataset = eval_dataset(str(settings.data), entry, limit=settings.eval_limit, cache=True)
    loader = make_loader(dataset, 256, settings.workers)
    return evaluate_accuracy(model, loader, resolve_device(settings.device), progress=False)["top1"]


def finetune_row(row: Row, settings: Settings, source: Path, out: Path, resume: bool) -> None:
    """`ht2 finetune` of the row's folder into `out` (continuing its checkpoint with `resume`)."""
    run_cli(finetune_args(settings, source, out, resume))


def checkpoint_epoch(out: Path) -> int | None:
    """The last epoch the fine-tune in `out` checkpointed (None: no checkpoint)."""
    state = out / "checkpoint" / "state.json"
    if not state.is_file():
        return None
    return int(json.loads(state.read_text(encoding="utf-8"))["meta"]["epoch"])


def training_log(out: Path) -> list[dict[str, Any]]:
    path = out / "log.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.strip()]


# --- one row, resumable ------------------------------------------------------------------------


def read_state(folder: Path) -> dict[str, Any]:
    path = folder / "row.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _live_holder(marker: Path) -> int | None:
    """The pid written in `marker` when it is another process that is still alive."""
    try:
        pid = int(marker.read_text(encoding="utf-8").strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return None if pid == os.getpid() else pid


@contextmanager
def claimed(folder: Path) -> Iterator[int | None]:
    """Hold folder/.running (this process's pid) while a row runs, so that two runs started on
    the same table never work on one row; yields the pid of a live process that holds it
    already (nothing is claimed then), else None. A marker left by a dead process is taken."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / ".running"
    for _ in range(2):
        try:
            descriptor = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            holder = _live_holder(marker)
            if holder is not None:
                yield holder
                return
            marker.unlink(missing_ok=True)
    else:
        raise SystemExit(f"paper_table: cannot claim {marker}")
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(str(os.getpid()))
    try:
        yield None
    finally:
        marker.unlink(missing_ok=True)


def run_row(row: Row, settings: Settings, folder: Path) -> dict[str, Any]:
    """Compress, evaluate and fine-tune one row, skipping what an earlier run finished. The
    time of compressing and scoring is summed over runs in folder/row.json as each finishes;
    the fine-tune's is read from its log, one line per epoch, so a killed run loses none."""
    folder.mkdir(parents=True, exist_ok=True)
    state = read_state(folder)
    compressed, tuned = folder / "compressed", folder / "finetune"
    if "sizes" not in state or not (compressed / "ht2.json").is_file():
        started = time.perf_counter()
        state["sizes"] = compress_row(row, settings, compressed)
        state.pop("top1_before", None)
        _save_state(folder, state, started)
    if "top1_before" not in state:
        started = time.perf_counter()
        state["top1_before"] = evaluate_row(compressed, settings)
        _save_state(folder, state, started)
    done = checkpoint_epoch(tuned)
    if done is None or done < row.epochs:
        if done is not None:
            print(f"{row.key}: resuming its fine-tune after epoch {done}", file=sys.stderr)
        finetune_row(row, settings, compressed, tuned, resume=done is not None)
    log = training_log(tuned)
    history = [line for line in log if "top1" in line]
    return {
        "key": row.key,
        "net": row.net,
        "pipeline": row.pipeline,
        "method": row.method,
        "target": row.target,
        "epochs": row.epochs,
        **({"lr": row.lr} if row.lr is not None else {}),
        **({"batch_size": row.batch} if row.batch is not None else {}),
        **({"ema": row.ema} if row.ema is not None else {}),
        "params_x": state["sizes"]["params_x"],
        "macs_x": state["sizes"]["macs_x"],
        **({"speed_for": settings.speed_for} if row.pipeline == "speed" else {}),
        **{k: v for k, v in state["sizes"].items() if k == "speedup_planned"},
        "top1_before": state["top1_before"],
        "top1_after": history[-1]["top1"],
        "top1_best": max(line["top1"] for line in history),
        "top1_by_epoch": {str(line["epoch"]): line["top1"] for line in history},
        "delta": None,
        "minutes": row_minutes(state, log),
        "settings": settings.to_dict(),
        "compress_command": _command(compress_args(row, settings, compressed))
        if row.pipeline != "base"
        else None,
        "finetune_command": _command(finetune_args(settings, compressed, tuned, False)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def row_minutes(state: dict[str, Any], log: list[dict[str, Any]]) -> float:
    """Minutes of compressing and scoring (row.json) plus the fine-tune's training epochs (its
    log). A row.json from before "stage_seconds" holds one sum that may miss epochs of a killed
    run: at least the epochs are counted then."""
    epochs = sum(float(line.get("seconds", 0.0)) for line in log)
    staged, older = state.get("stage_seconds", 0.0), state.get("seconds", 0.0)
    return (staged + (max(older, epochs) if older else epochs)) / 60


def _command(argv: list[str]) -> str:
    """`ht2 ARGV` with every absolute path written portably."""
    return command_line("ht2", argv)


def _save_state(folder: Path, state: dict[str, Any], started: float) -> None:
    state["stage_seconds"] = state.get("stage_seconds", 0.0) + time.perf_counter() - started
    write_text(folder / "row.json", json.dumps(state, indent=1) + "\n")


# --- the command line --------------------------------------------------------------------------


def bundled_nets() -> list[str]:
    """The nets of the plan whose pretrained weights ship with ht2."""
    from ht2.models.bundled import bundled_path

    return [net for net in NETS if bundled_path(net).is_file()]


def _weights(text: str) -> tuple[str, str]:
    net, sep, path = text.partition("=")
    if not sep or net not in NETS or not path:
        raise argparse.ArgumentTypeError(f"expected NET=FILE with NET among {', '.join(NETS)}")
    return net, str(Path(path).resolve())


def _speedups(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"want speedups such as 1.2,1.5, got {text!r}") from None
    if any(value <= 1 for value in values):
        raise argparse.ArgumentTypeError(f"each speedup must be above 1, got {text!r}")
    return values


def _speed_for(text: str) -> str:
    from ht2.choices import DTYPES, RUNTIMES

    parts = text.split(",")
    if len(parts) != 3 or parts[0] not in RUNTIMES or parts[1] not in DTYPES:
        raise argparse.ArgumentTypeError(
            f"want RUNTIME,DTYPE,BATCH with a runtime of {', '.join(RUNTIMES)} and a dtype of "
            f"{', '.join(DTYPES)}, such as openvino,bfloat16,128; got {text!r}"
        )
    if not parts[2].isdigit() or int(parts[2]) < 1:
        raise argparse.ArgumentTypeError(f"the batch size must be 1 or more, got {text!r}")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="CIFAR-10 folder or .tar.gz with train/ and test/")
    parser.add_argument(
        "--nets", help="comma-separated nets (default: those with bundled weights, or --weights)"
    )
    parser.add_argument("--weights", type=_weights, action="append", metavar="NET=FILE")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default: 10)")
    parser.add_argument(
        "--lr",
        type=real_number(0.0, above=True),
        help="the fine-tune's peak learning rate; its rows (a base row too) are a table of "
        "their own (default: ht2 finetune's recipe)",
    )
    parser.add_argument(
        "--ema",
        type=real_number(0.0, 1.0, above=True, below=True),
        metavar="DECAY",
        help="fine-tune keeping a moving average of the weights (ht2 finetune --ema); its rows "
        "(a base row too) are a table of their own (default: none)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=2, help="data workers (default: 2)")
    parser.add_argument(
        "--batch-size",
        type=whole_number(1, "a batch size of 1 or more"),
        default=TABLE_BATCH,
        help=f"the fine-tune's batch; any other than {TABLE_BATCH} makes its rows (a base row "
        f"too) a table of their own (default: {TABLE_BATCH})",
    )
    parser.add_argument("--calib-images", type=int, help="for the best pipeline (default: its)")
    parser.add_argument("--max-steps", type=int, help="smoke runs: optimiser steps per run")
    parser.add_argument("--train-limit", type=int, help="smoke runs: training images")
    parser.add_argument("--eval-limit", type=int, help="smoke runs: test images")
    parser.add_argument("--rows", help="comma-separated globs on row keys, such as '*/best/*'")
    parser.add_argument(
        "--speed",
        type=_speedups,
        default=(),
        metavar="X,...",
        help="also HT-2 compressed to run X times faster (ht2 compress --target-speedup), "
        "fine-tuned like every row (default: none)",
    )
    parser.add_argument(
        "--speed-for",
        type=_speed_for,
        default="openvino,bfloat16,128",
        metavar="RUNTIME,DTYPE,BATCH",
        help="where --speed rows are timed (default: openvino,bfloat16,128)",
    )
    parser.add_argument("--work", type=Path, default=WORK, help=f"(default: {WORK})")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"(default: {RESULTS})")
    parser.add_argument("--dry-run", action="store_true", help="list the rows and which are done")
    parser.add_argument(
        "--table", action="store_true", help="refresh the deltas and rewrite the Markdown"
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        data=str(Path(args.data).resolve()) if args.data else None,
        epochs=args.epochs,
        lr=args.lr,
        ema=args.ema,
        device=args.device,
        threads=args.threads,
        workers=args.workers,
        batch_size=args.batch_size,
        calib_images=args.calib_images,
        max_steps=args.max_steps,
        train_limit=args.train_limit,
        eval_limit=args.eval_limit,
        weights=dict(args.weights or []),
        speed_for=args.speed_for,
    )


def status(row: Row, done: set[str], work: Path) -> str:
    if row.key in done:
        return "done"
    epoch = checkpoint_epoch(work / row.slug / "finetune")
    if epoch is not None:
        return f"fine-tuned {epoch}/{row.epochs} epochs"
    return "compressed" if (work / row.slug / "compressed" / "ht2.json").is_file() else "to do"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        rows = read_results(args.results)
        write_table(args.results, rows)
        print(f"wrote {args.results.with_suffix('.md')} from {len(rows)} rows of {args.results}")
        return 0
    settings = settings_from(args)
    nets = args.nets.split(",") if args.nets else bundled_nets() + sorted(settings.weights)
    unknown = [net for net in nets if net not in NETS]
    if unknown:
        raise SystemExit(f"paper_table: unknown nets {unknown}; known: {', '.join(NETS)}")
    batch = None if args.batch_size == TABLE_BATCH else args.batch_size
    rows = pick(
        plan_rows(list(dict.fromkeys(nets)), args.epochs, args.speed, args.lr, batch, args.ema),
        args.rows.split(",") if args.rows else None,
    )
    done = {row["key"] for row in read_results(args.results)}
    if args.dry_run:
        for row in rows:
            print(f"{row.key:45s} {status(row, done, args.work)}")
        print(f"{sum(row.key in done for row in rows)} of {len(rows)} rows done")
        return 0
    if not settings.data:
        raise SystemExit("paper_table: --data is needed to run rows")
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    from ht2.cli.signals import install_interrupt_handlers

    install_interrupt_handlers()
    try:
        for row in rows:
            done |= {r["key"] for r in read_results(args.results)}  # another run may add rows
            if row.key in done:
                print(f"{row.key}: done, skipped", flush=True)
                continue
            with claimed(args.work / row.slug) as holder:
                if holder is not None:
                    print(f"{row.key}: being run by process {holder}, skipped", flush=True)
                    continue
                print(f"{row.key}: running", flush=True)
                result = run_row(row, settings, args.work / row.slug)
            store_row(args.results, result)
            print(
                f"{row.key}: top-1 {result['top1_before']:.2f} -> {result['top1_after']:.2f} % "
                f"in {result['minutes']:.1f} min; wrote {args.results}",
                flush=True,
            )
    except KeyboardInterrupt:
        print("paper_table: stopped; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
