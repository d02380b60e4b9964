"""Realized speed: are compressed models really faster, best against best and like for like?

Run: python benchmarks/realized_speed.py [--models cifar10_resnet56,resnet50,vgg16_bn]
     [--batch-sizes N,N] [--runtimes eager,compile,onnxruntime] [--repeats 20] [--warmup 3]
     [--threads N] [--per-layer] [--latency-aware] [--target-speedup X] [--prune]
     [--data DIR [--eval-images N] [--calib-images N]]
     [--out benchmarks/results/realized_speed.json]

Each model is compressed (ResNet-56 at energy 0.7 from the shared weights; resnet50 and
vgg16_bn from random init to 3x fewer MACs), then it and its original are timed in every
treatment (dtype x memory format x runtime), BatchNorms folded on both sides, run by run in
turn (ht2.metrics.like_for_like.compare_speed). Per batch size the table marks the fastest
like-for-like pair and the best against the best: each model in its own fastest treatment.
The issue's targets are checked on the best against the best. --prune adds the rival: the
original channel-pruned (`ht2 prune`) to the same MAC reduction, timed the same way. --data
adds what the speed costs: top-1 of every model timed (real weights only), as it is and after
BatchNorm calibration on training images, so that speed never hides a loss. Writes
one JSON (atomically; an existing --out is replaced only when it holds earlier results of this
script).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from paths import ROOT, command_line, portable
from paths import write_json as write_atomically  # benchmarks/ is on sys.path when run as a script
from shared_weights import WEIGHTS
from torch import nn

import ht2
from ht2.choices import FORM_RUNTIMES, RUNTIMES
from ht2.cli.common import parse_batch_sizes
from ht2.cli.tables import render
from ht2.device import resolve_device
from ht2.errors import HT2Error
from ht2.metrics import time_layers
from ht2.metrics.like_for_like import SpeedComparison, compare_speed, treatment_matrix
from ht2.metrics.speedup import layer_row
from ht2.metrics.treatment import Treatment, native_bfloat16
from ht2.surgery.latency_aware import FormTiming
from ht2.surgery.targets import Target

BENCHMARK = "realized_speed"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "realized_speed.json"
DEFAULT_MODELS = "cifar10_resnet56,resnet50,vgg16_bn"
DEFAULT_RUNTIMES = "eager,compile,onnxruntime"
KIND_NAMES = {"macs": "MACs", "params": "parameters"}


@dataclass(frozen=True)
class Case:
    """How one network is compressed, at which batch sizes it is timed, and how it is named."""

    label: str
    options: dict[str, Any] = field(default_factory=dict)
    sizes: tuple[int, ...] = (1, 16, 128)

    def describe(self) -> str:
        target = self.options.get("target")
        if target is not None:
            return f"{target.factor:g}x fewer {KIND_NAMES[target.kind]}"
        return f"e={self.options['energy']:g}"


CASES = {
    "cifar10_resnet56": Case("ResNet-56", {"energy": 0.7}),
    "resnet50": Case("resnet50", {"target": Target("macs", 3)}, (1, 16)),
    "vgg16_bn": Case("vgg16_bn", {"target": Target("macs", 3)}, (1, 16)),
    "cifar10_resnet20": Case("ResNet-20", {"energy": 0.7}),  # quick checks only
}

# The targets, each a best-against-best speedup at one batch size.
TARGETS = (
    ("cifar10_resnet56", 128, 1.5),
    ("resnet50", 16, 2.0),
    ("resnet50", 1, 1.3),
)


def original(name: str, shared: Path) -> tuple[nn.Module, str]:
    """The network with its shared weights when the file is there, else random init."""
    file = shared / "weights" / WEIGHTS.get(name, "")
    if name in WEIGHTS and file.is_file():
        return ht2.models.create(name, weights=file).eval(), portable(file.resolve())
    return ht2.models.create(name).eval(), "random init"


def treatments_for(device: torch.device, runtimes: list[str]) -> tuple[list[Treatment], list[str]]:
    """Every dtype x memory format treatment of `runtimes` that runs here, BatchNorms folded;
    notes on the runtimes left out."""
    every, notes = treatment_matrix(device, fold_bn=True)
    chosen = [t for t in every if t.runtime in runtimes]
    notes = [note for note in notes if note.split(" ", 1)[0] in runtimes]
    for runtime in runtimes:
        if not any(t.runtime == runtime for t in chosen) and not any(
            note.startswith(runtime) for note in notes
        ):
            notes.append(f"{runtime} left out: no treatment of it runs on {device}")
    if not chosen:
        raise HT2Error(f"no treatment of --runtimes {','.join(runtimes)} runs on {device}")
    return chosen, notes


def measure(
    name: str, args: argparse.Namespace, device: torch.device, treatments: list[Treatment]
) -> dict[str, Any]:
    """One network: compressed, then timed against its original in every treatment."""
    case = CASES[name]
    sizes = args.batch_sizes or list(case.sizes)
    base, weights = original(name, args.shared)
    accuracy = accuracy_meter(args, name, weights)
    input_size = ht2.models.get_entry(name).input_size
    one = torch.zeros(1, *input_size)
    model = copy.deepcopy(base)
    report = ht2.compress(model, example_input=one, **case.options)
    timing = {"repeats": args.repeats, "warmup": args.warmup, "threads": args.threads}
    measured = compare_speed(
        model,
        base,
        input_size,
        treatments,
        sizes,
        device,
        mark=True,
        names=(f"{name} compressed", f"the original {name}"),
        **timing,
    )
    result: dict[str, Any] = {
        "model": name,
        "label": case.label,
        "compression": case.describe(),
        "weights": weights,
        "input_size": list(input_size),
        "params_before": report.params_before,
        "params_after": report.params_after,
        "macs": measured.macs,
        "baseline_macs": measured.baseline_macs,
        "mac_reduction": measured.baseline_macs / max(measured.macs, 1),
        "target_solution": report.target,
        "rows": measured.rows,
        "best": measured.best,
    }
    if accuracy is not None:
        result["accuracy"] = {"original": accuracy(base), "compressed": accuracy(model)}
    if args.per_layer:
        result["layers"] = per_layer(model, measured.best, input_size, device, timing)
    if args.latency_aware:
        result["latency_aware"] = latency_aware(model, base, measured, input_size, device, timing)
    if args.target_speedup:
        result["speed_target"] = speed_target(
            base, measured, input_size, device, timing, args.target_speedup, accuracy
        )
    if args.prune:
        result["pruned"] = pruned(
            base, result["mac_reduction"], input_size, treatments, sizes, device, timing, accuracy
        )
    return result


Meter = Callable[[nn.Module], dict[str, float]]


def accuracy_meter(args: argparse.Namespace, name: str, weights: str) -> Meter | None:
    """Top-1 of a model on --data's test split, as it is and after BatchNorm calibration (on a
    copy); None without --data or without real weights (random ones score chance)."""
    if args.data is None or weights == "random init":
        return None
    from ht2.experiments.scoring import top1_scorer
    from ht2.train.calibration import train_image_calibrator

    entry = ht2.models.get_entry(name)
    score = top1_scorer(str(args.data), entry, args.eval_images, 256, 0, progress=False)
    calibrate = train_image_calibrator(str(args.data), entry, args.calib_images, 256, 0, False)

    def measure(model: nn.Module) -> dict[str, float]:
        copied = copy.deepcopy(model).eval()
        before = score(copied)
        calibrate(copied)
        return {"top1": before, "top1_calibrated": score(copied)}

    return measure


def pruned(
    base: nn.Module,
    mac_reduction: float,
    input_size: tuple[int, ...],
    treatments: list[Treatment],
    sizes: list[int],
    device: torch.device,
    timing: dict[str, Any],
    accuracy: Meter | None = None,
) -> dict[str, Any]:
    """The rival users weigh decomposition against: the original channel-pruned (ht2 prune,
    L1 filters) to the MAC reduction the compressed model reached, then timed against the
    original in every treatment like the compressed model was."""
    from ht2.planning.pruning import prune

    model = copy.deepcopy(base)
    plan = prune(model, mac_reduction, torch.zeros(1, *input_size), kind="macs")
    measured = compare_speed(
        model,
        base,
        input_size,
        treatments,
        sizes,
        device,
        mark=True,
        names=("the pruned model", "the original"),
        **timing,
    )
    return {
        "param_reduction": plan.param_reduction,
        "mac_reduction": measured.baseline_macs / max(measured.macs, 1),
        "rows": measured.rows,
        "best": measured.best,
        **({"accuracy": accuracy(model)} if accuracy else {}),
    }


def per_layer(
    model: nn.Module,
    best: list[dict[str, Any]],
    input_size: tuple[int, ...],
    device: torch.device,
    timing: dict[str, Any],
) -> list[dict[str, Any]]:
    """Each factorized layer against its dense original at each batch size, eagerly in the
    dtype and memory format of the compressed model's fastest treatment there."""
    rows = []
    for entry in best:
        fastest = Treatment.from_dict(entry["fastest_like_for_like"]["treatment"])
        x = torch.randn(entry["batch_size"], *input_size, device=device)
        timed = time_layers(
            model.to(device), x, dtype=fastest.dtype, channels_last=fastest.channels_last, **timing
        )
        for layer in timed:
            rows.append({**layer_row(entry["batch_size"], layer), "treatment": fastest.to_dict()})
    model.to("cpu")
    return rows


def latency_aware(
    model: nn.Module,
    base: nn.Module,
    measured: SpeedComparison,
    input_size: tuple[int, ...],
    device: torch.device,
    timing: dict[str, Any],
) -> list[dict[str, Any]]:
    """Per batch size: the layers put in their fastest forms (size kept; forms timed in the
    original's fastest treatment, BatchNorms unfolded and eager when that runtime cannot time
    forms), then timed against the original in the treatment the original ran fastest in."""
    rows = []
    one = torch.zeros(1, *input_size)
    for entry in measured.best:
        size = entry["batch_size"]
        theirs = Treatment.from_dict(entry["best_against_best"]["baseline_treatment"])
        runtime = theirs.runtime if theirs.runtime in FORM_RUNTIMES else "eager"
        forms_in = Treatment(theirs.dtype, theirs.channels_last, runtime, fold_bn=False)
        aware = copy.deepcopy(model)
        choices = FormTiming(str(device), size, treatment=forms_in, **timing).choose(aware, one)
        pair = compare_speed(aware, base, input_size, [theirs], [size], device, **timing)
        plain = next(
            r
            for r in measured.rows
            if r["batch_size"] == size and r["treatment"] == theirs.to_dict()
        )
        rows.append(
            {
                **pair.rows[0],
                "forms_timed_in": forms_in.to_dict(),
                "forms": dict(Counter(choice.form for choice in choices.layers)),
                "layout_kept": choices.kept,
                "plain_latency_ms": plain["latency_ms"],
            }
        )
    return rows


def speed_target(
    base: nn.Module,
    measured: SpeedComparison,
    input_size: tuple[int, ...],
    device: torch.device,
    timing: dict[str, Any],
    speedup: float,
    accuracy: Meter | None = None,
) -> list[dict[str, Any]]:
    """Per batch size: the original compressed afresh by the speed planner (`ht2 compress
    --target-speedup`) for the treatment the original ran fastest in (its whole-model checks in
    that runtime, layers alone in eager where it is an exported one), then timed against the
    original in that treatment, BatchNorms folded on both sides."""
    rows = []
    one = torch.zeros(1, *input_size)
    for entry in measured.best:
        size = entry["batch_size"]
        theirs = Treatment.from_dict(entry["best_against_best"]["baseline_treatment"])
        planned_in = Treatment(theirs.dtype, theirs.channels_last, theirs.runtime, fold_bn=False)
        how = FormTiming(str(device), size, treatment=planned_in, **timing)
        model = copy.deepcopy(base)
        plan = ht2.planning.plan_with(
            "speed", model, one, ht2.planning.CompressOptions(), speedup=speedup, timing=how
        )
        report = ht2.apply(model, plan, example_input=one)
        pair = compare_speed(model, base, input_size, [theirs], [size], device, **timing)
        record = plan.provenance["speed_target"]
        rows.append(
            {
                **pair.rows[0],
                "target_speedup": speedup,
                "planned_in": planned_in.to_dict(),
                "planner_reached": record["reached"],
                "planner_met": record["met"],
                "param_reduction": report.param_reduction,
                "layers_factorized": len(plan.layers),
                "layers_dense": len(plan.dense),
                **({"accuracy": accuracy(model)} if accuracy else {}),
            }
        )
    return rows


def target_rows(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets against the best-against-best speedups measured (None: not run)."""
    reached = {
        (m["model"], b["batch_size"]): b["best_against_best"]["speedup"]
        for m in models
        for b in m["best"]
    }
    rows = []
    for name, size, wanted in TARGETS:
        value = reached.get((name, size))
        rows.append(
            {
                "model": name,
                "compression": CASES[name].describe(),
                "batch_size": size,
                "measure": "best_against_best",
                "target_speedup": wanted,
                "reached": value,
                "met": None if value is None else value >= wanted,
            }
        )
    return rows


def _ms(value: float) -> str:
    return f"{value:.3f}"


def _short(data: dict[str, Any]) -> str:
    return " ".join(Treatment.from_dict(data).cells())


def top1_text(accuracy: dict[str, float] | None) -> str:
    """'61.20 % (80.15 % calibrated)', or '' when accuracy was not measured."""
    if not accuracy:
        return ""
    return f"top-1 {accuracy['top1']:.2f} % ({accuracy['top1_calibrated']:.2f} % calibrated)"


def print_model(result: dict[str, Any]) -> None:
    """The treatment table of one network, then best against best per batch size."""
    headers = [
        "batch",
        "dtype",
        "format",
        "runtime",
        "BN",
        "model ms",
        "original ms",
        "like-for-like",
        "MAC reduction",
        "realized/MAC",
        "mark",
    ]
    lines = [
        [
            str(row["batch_size"]),
            *Treatment.from_dict(row["treatment"]).cells(),
            _ms(row["latency_ms"]),
            _ms(row["baseline_latency_ms"]),
            f"{row['speedup']:.2f}x",
            f"{row['mac_reduction']:.2f}x",
            f"{row['realized_over_mac']:.2f}",
            "; ".join(row.get("marks", [])) or "-",
        ]
        for row in result["rows"]
    ]
    print(f"\n{result['label']} ({result['compression']}, weights: {result['weights']})")
    print(render(headers, lines))
    for entry in result["best"]:
        pair, fastest = entry["best_against_best"], entry["fastest_like_for_like"]
        print(
            f"batch {entry['batch_size']}: best against best {pair['speedup']:.2f}x "
            f"(model {_short(pair['treatment'])} {_ms(pair['latency_ms'])} ms; original "
            f"{_short(pair['baseline_treatment'])} {_ms(pair['baseline_latency_ms'])} ms; "
            f"realized/MAC {pair['realized_over_mac']:.2f}); fastest like-for-like "
            f"{fastest['speedup']:.2f}x in {_short(fastest['treatment'])}"
        )
    if "accuracy" in result:
        print(
            f"{result['label']}: original {top1_text(result['accuracy']['original'])}; "
            f"compressed {top1_text(result['accuracy']['compressed'])}"
        )
    for row in result.get("latency_aware", []):
        print(
            f"batch {row['batch_size']}: latency-aware forms in {_short(row['treatment'])}: "
            f"{_ms(row['latency_ms'])} ms (plain factors {_ms(row['plain_latency_ms'])} ms), "
            f"{row['speedup']:.2f}x against the original, forms {row['forms']}"
        )
    for row in result.get("speed_target", []):
        print(
            f"batch {row['batch_size']}: --target-speedup {row['target_speedup']:g} planned in "
            f"{_short(row['planned_in'])}: the planner reached {row['planner_reached']:.2f}x; "
            f"timed like for like in {_short(row['treatment'])}, BN folded: "
            f"{row['speedup']:.2f}x ({row['param_reduction']:.2f}x fewer parameters, "
            f"{row['mac_reduction']:.2f}x fewer MACs, {row['layers_factorized']} layers "
            f"factorized, {row['layers_dense']} dense) {top1_text(row.get('accuracy'))}".rstrip()
        )
    for entry in result.get("pruned", {}).get("best", []):
        pair = entry["best_against_best"]
        print(
            f"batch {entry['batch_size']}: channel pruning to the same MACs "
            f"({result['pruned']['mac_reduction']:.2f}x fewer, "
            f"{result['pruned']['param_reduction']:.2f}x fewer parameters): best against best "
            f"{pair['speedup']:.2f}x (pruned {_short(pair['treatment'])} "
            f"{_ms(pair['latency_ms'])} ms) {top1_text(result['pruned'].get('accuracy'))}".rstrip()
        )
    if result.get("layers"):
        print_layers(result["layers"])


def print_layers(layers: list[dict[str, Any]]) -> None:
    """Per-layer timings: where the time goes."""
    headers = ["batch", "layer", "method", "dense ms", "factorized ms", "speedup", "MAC reduction"]
    lines = [
        [
            str(layer["batch_size"]),
            layer["name"],
            layer["method"],
            _ms(layer["dense_ms"]),
            _ms(layer["factorized_ms"]),
            f"{layer['speedup']:.2f}x",
            f"{layer['mac_reduction']:.2f}x",
        ]
        for layer in layers
    ]
    print("per layer (eager, in the fastest treatment's dtype and memory format):")
    print(render(headers, lines))


def print_targets(rows: list[dict[str, Any]]) -> None:
    """Each target against what was reached."""
    print("\ntargets (best against best):")
    for row in rows:
        reached = "not measured" if row["reached"] is None else f"{row['reached']:.2f}x"
        verdict = {None: "", True: ", met", False: ", NOT met"}[row["met"]]
        print(
            f"  {CASES[row['model']].label} ({row['compression']}) batch {row['batch_size']}: "
            f"target >= {row['target_speedup']:g}x, reached {reached}{verdict}"
        )


def is_ours(path: Path) -> bool:
    """Whether `path` is absent or holds results of this script (so may be replaced)."""
    if not path.exists():
        return True
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("benchmark") == BENCHMARK


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """`data` written atomically to `path`; when `path` came to hold something else meanwhile, the
    results go beside it under a fresh name instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not is_ours(path):
        handle, name = tempfile.mkstemp(prefix=f"{path.stem}-", suffix=".json", dir=path.parent)
        os.close(handle)
        print(f"{portable(path)} now holds other data: results written to {portable(name)}")
        path = Path(name)
    return write_atomically(path, data)


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages, to two decimals."""
    return [round(value, 2) for value in os.getloadavg()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default=DEFAULT_MODELS,
        help=f"comma list of {', '.join(CASES)} (default: {DEFAULT_MODELS})",
    )
    parser.add_argument(
        "--batch-sizes", help="comma list for every model (default: 1,16,128 at 32 px, 1,16 at 224)"
    )
    parser.add_argument(
        "--runtimes",
        default=DEFAULT_RUNTIMES,
        help=f"comma list of {', '.join(RUNTIMES)} (default: {DEFAULT_RUNTIMES})",
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed runs (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's choice)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="(default: cpu)")
    parser.add_argument(
        "--per-layer",
        action="store_true",
        help="also time each factorized layer against its dense original (default: off)",
    )
    parser.add_argument(
        "--latency-aware",
        action="store_true",
        help="also time a variant with each layer in its fastest form (default: off)",
    )
    parser.add_argument(
        "--target-speedup",
        type=float,
        metavar="X",
        help="also compress each original afresh for X times faster (the speed planner) and "
        "time it (default: off)",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="also time the original channel-pruned to the same MAC reduction (default: off)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="CIFAR-10 / ImageNet folder or archive: also measure top-1 of every model timed "
        "that has real weights, as it is and BatchNorm-calibrated (default: off)",
    )
    parser.add_argument(
        "--eval-images",
        type=int,
        help="test images to score on, class-balanced (default: all)",
    )
    parser.add_argument(
        "--calib-images",
        type=int,
        default=2048,
        help="training images for the BatchNorm calibration (default: 2048)",
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=ROOT.parent / "shared",
        help="folder holding weights/ (default: ../shared)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="result JSON (default: benchmarks/results/realized_speed.json)",
    )
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Turn the flags into lists and refuse bad ones before anything is timed."""
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in CASES]
    if unknown or not args.models:
        raise HT2Error(f"--models takes names from {', '.join(CASES)}; got {unknown or 'none'}")
    args.runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    unknown = [r for r in args.runtimes if r not in RUNTIMES]
    if unknown or not args.runtimes:
        raise HT2Error(f"--runtimes takes names from {', '.join(RUNTIMES)}; got {unknown}")
    args.batch_sizes = parse_batch_sizes(args.batch_sizes) if args.batch_sizes else None
    for flag, value, low in (
        ("--repeats", args.repeats, 1),
        ("--warmup", args.warmup, 0),
        ("--threads", args.threads, 1),
        ("--eval-images", args.eval_images, 1),
        ("--calib-images", args.calib_images, 1),
    ):
        if value is not None and value < low:
            raise HT2Error(f"{flag} must be at least {low}, got {value}")
    if args.target_speedup is not None and not args.target_speedup > 1:
        raise HT2Error(f"--target-speedup must be above 1, got {args.target_speedup:g}")
    if args.out.is_dir() or not is_ours(args.out):
        raise HT2Error(
            f"--out {portable(args.out.resolve())} exists and is not a {BENCHMARK} result: "
            "give another path"
        )


def run(argv: list[str]) -> dict[str, Any]:
    """The whole benchmark: tables printed, the JSON written and returned."""
    args = parse_args(argv)
    check_args(args)
    device = resolve_device(args.device)
    treatments, notes = treatments_for(device, args.runtimes)
    if any(t.dtype == "bfloat16" for t in treatments) and not native_bfloat16(device):
        notes.append(f"bfloat16 is emulated on this {device.type}: its times say little")
    load_start = load_average()
    torch.manual_seed(0)
    models = [measure(name, args, device, treatments) for name in args.models]
    targets = target_rows(models)
    data = {
        "benchmark": BENCHMARK,
        "command": command_line("python benchmarks/realized_speed.py", argv),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads or torch.get_num_threads(),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "runtimes": args.runtimes,
        "treatments": [t.to_dict() for t in treatments],
        "bfloat16_native": native_bfloat16(device),
        "notes": notes,
        "load_average": {"start": load_start, "end": load_average()},
        "targets": targets,
        "models": models,
    }
    for result in models:
        print_model(result)
    print_targets(targets)
    for note in notes:
        print(f"note: {note}")
    print(f"written to {portable(write_json(args.out, data).resolve())}")
    return data


def main(argv: list[str] | None = None) -> int:
    try:
        run(sys.argv[1:] if argv is None else argv)
    except HT2Error as error:
        print(f"realized_speed: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
