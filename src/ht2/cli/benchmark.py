"""`ht2 benchmark`: latency of a model, optionally against a baseline run the same way."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ht2.choices import DTYPES, RUNTIMES
from ht2.cli.common import first_given, load_model_or_dir, parse_batch_sizes
from ht2.cli.number_args import non_negative_int, positive_int
from ht2.cli.tables import render
from ht2.errors import HT2Error

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ht2.metrics import LayerTiming, Timing
    from ht2.metrics.treatment import Prepared, Treatment
    from ht2.models import ModelEntry

DEFAULT_BATCH_SIZES = "1,32,128"

EXAMPLES = """examples:
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20 --fold-bn --channels-last --threads 1
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20 --dtype bfloat16 --runtime compile
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20 --runtime onnxruntime --threads 1
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20 --matrix --runtime eager --threads 1
  ht2 benchmark out/r20-e0.8 --per-layer --batch-sizes 32 --json
  ht2 benchmark resnet50 --device cuda --batch-sizes 1,64 --repeats 50

The baseline runs exactly as the model does: the same dtype, memory format and runtime, and
BatchNorms folded on both sides or on neither (a folder from `ht2 export --fold-bn` folds the
baseline's too). --unmatched-baseline runs the baseline as loaded (float32, NCHW, eager)
instead, which mixes the gain of compression with that of the treatment.
A registry MODEL without --weights gets random weights: they do not change speed.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="time a model (and a baseline run the same way) per batch size",
        description="Time MODEL or a compressed model folder DIR at each batch size; with "
        "--against, time a baseline in the same process, run by run in turn with it, given the "
        "same treatment (dtype, memory format, runtime, BatchNorm folding), and show the "
        "speedup, the MAC reduction and how much of it was realized. --matrix times every "
        "treatment. Times are medians in ms per batch.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        metavar="MODEL|DIR",
        help="registry name (random weights unless --weights) or a folder from `ht2 compress`",
    )
    parser.add_argument(
        "--weights", metavar="FILE", help="state dict for a registry MODEL (default: random)"
    )
    parser.add_argument(
        "--against",
        metavar="MODEL|DIR",
        help="baseline to compare with, e.g. the uncompressed registry name (default: none)",
    )
    treatment = parser.add_argument_group("treatment (the same for MODEL and the baseline)")
    treatment.add_argument(
        "--dtype",
        choices=DTYPES,
        help="bfloat16 runs both models under autocast, weights kept in float32 (default: float32)",
    )
    treatment.add_argument(
        "--channels-last",
        action="store_true",
        help="run both models in channels_last memory format (default: off, NCHW)",
    )
    treatment.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="eager PyTorch, torch.compile, or ONNX Runtime on the CPU (both models exported "
        "to a temporary folder; needs pip install 'ht2[onnx]') (default: eager)",
    )
    treatment.add_argument(
        "--fold-bn",
        action="store_true",
        help="fold BatchNorms into the convs before them in both models (default: only when "
        "either comes folded, as from `ht2 export --fold-bn`)",
    )
    treatment.add_argument(
        "--onnx",
        metavar="FILE",
        help="MODEL's graph for --runtime onnxruntime (implied), from `ht2 export DIR --format "
        "onnx`, instead of exporting it now (default: none)",
    )
    treatment.add_argument(
        "--matrix",
        action="store_true",
        help="time every treatment: each dtype, memory format, runtime and folding that "
        "--dtype, --channels-last, --runtime and --fold-bn do not fix; marks the fastest "
        "like-for-like pair and the best against the best (default: off)",
    )
    treatment.add_argument(
        "--unmatched-baseline",
        action="store_true",
        help="run the baseline as loaded (float32, NCHW, eager) whatever MODEL's treatment; "
        "the output says so (default: off, like for like)",
    )
    parser.add_argument(
        "--batch-sizes",
        default=DEFAULT_BATCH_SIZES,
        metavar="N,N,...",
        help=f"comma-separated batch sizes (default: {DEFAULT_BATCH_SIZES})",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads for PyTorch and ONNX Runtime (default: PyTorch's choice)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=20,
        metavar="N",
        help="timed runs per model (default: 20)",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=3,
        metavar="N",
        help="untimed runs per model first, after one that compiles (default: 3)",
    )
    parser.add_argument(
        "--per-layer",
        action="store_true",
        help="also time every factorized layer against its dense original, eagerly in the "
        "treatment's dtype and memory format (default: off)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of tables (default: tables)"
    )
    parser.set_defaults(run=run)


def check_counts(args: argparse.Namespace) -> None:
    """Repeats, warm-up runs and threads within their ranges, else a one-line error."""
    if args.repeats < 1:
        raise HT2Error(f"--repeats must be at least 1, got {args.repeats}")
    if args.warmup < 0:
        raise HT2Error(f"--warmup must be 0 or more, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        raise HT2Error(f"--threads must be at least 1, got {args.threads}")


def check_flags(args: argparse.Namespace) -> None:
    """Flags that cannot go together, refused before any model is loaded."""
    if args.onnx and args.runtime not in (None, "onnxruntime"):
        raise HT2Error(f"--onnx FILE runs in ONNX Runtime: drop --runtime {args.runtime}")
    if args.unmatched_baseline and not args.against:
        raise HT2Error("--unmatched-baseline needs a baseline: give --against MODEL|DIR")
    if args.matrix:
        clash = first_given(
            ("--onnx", args.onnx),
            ("--unmatched-baseline", args.unmatched_baseline),
            ("--per-layer", args.per_layer),
        )
        if clash:
            raise HT2Error(f"--matrix times models exported now, like for like: drop {clash}")


def total_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Analytic Conv/Linear MACs of one sample."""
    import torch

    from ht2.metrics import layer_macs

    return sum(layer_macs(model, torch.zeros(1, *input_size)).values())


def onnx_file_folds(path: str) -> int | None:
    """How many BatchNorms `ht2 export --fold-bn` folded into this ONNX file (0: exported
    unfolded), as its onnx_check.json says; None when no such record sits beside it."""
    from pathlib import Path

    record = Path(path).with_name("onnx_check.json")
    try:
        return len(json.loads(record.read_text()).get("fold_bn", {}).get("folded", []))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def treatments_asked(
    args: argparse.Namespace, device: torch.device, folded: bool
) -> tuple[list[Treatment], list[str]]:
    """The treatments to time (one, or the matrix) and notes on what the matrix left out."""
    from ht2.metrics.treatment import Treatment, all_treatments

    fold = args.fold_bn or folded
    if not args.matrix:
        runtime = "onnxruntime" if args.onnx else args.runtime or "eager"
        return [Treatment(args.dtype or "float32", args.channels_last, runtime, fold)], []
    notes = []
    runtimes = [args.runtime] if args.runtime else list(RUNTIMES)
    if "onnxruntime" in runtimes and not args.runtime and not onnxruntime_installed():
        runtimes.remove("onnxruntime")
        notes.append("onnxruntime left out: not installed (pip install 'ht2[onnx]')")
    folds = (True,) if fold else (False, True)
    if folded and not args.fold_bn:
        notes.append("BatchNorms folded in every treatment: a model came folded")
    treatments = [
        t
        for t in all_treatments(device, runtimes, folds)
        if (args.dtype is None or t.dtype == args.dtype)
        and (not args.channels_last or t.channels_last)
    ]
    if not treatments:
        raise HT2Error(f"no treatment of --matrix runs on {device} with the flags given")
    return treatments, notes


def onnxruntime_installed() -> bool:
    from ht2.export import require_onnx

    try:
        require_onnx()
    except HT2Error:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import torch

    from ht2.device import resolve_device
    from ht2.io.folds import folds_of
    from ht2.metrics import factorized_layers, time_layers, time_models
    from ht2.metrics.treatment import Treatment, check_treatment, prime, warn_if_emulated

    sizes = parse_batch_sizes(args.batch_sizes)
    check_counts(args)
    check_flags(args)
    device = resolve_device(args.device)
    model, entry = load_model_or_dir(args.model, args.weights)
    baseline = load_baseline(args, entry)
    if args.per_layer and not factorized_layers(model):
        raise HT2Error(
            f"--per-layer needs a compressed model: {args.model} has no factorized layer "
            "(give a folder written by `ht2 compress`)"
        )
    file_folds = onnx_file_folds(args.onnx) if args.onnx else None
    folded = bool(folds_of(model)) or bool(file_folds)
    if baseline is not None and not args.unmatched_baseline:
        folded = folded or bool(folds_of(baseline))
    treatments, notes = treatments_asked(args, device, folded)
    for treatment in treatments:
        check_treatment(treatment, device)
    if args.onnx and file_folds == 0 and treatments[0].fold_bn:
        raise HT2Error(
            f"{args.onnx} was exported without --fold-bn but the treatment folds BatchNorms: "
            "export it with `ht2 export DIR --fold-bn --format onnx`, or drop --onnx"
        )
    emulated = any(warn_if_emulated(dtype, device) for dtype in {t.dtype for t in treatments})
    base_treatment = (
        Treatment(fold_bn=bool(folds_of(baseline))) if args.unmatched_baseline else None
    )
    macs = [total_macs(m, entry.input_size) for m in (model, baseline) if m is not None]
    with tempfile.TemporaryDirectory(prefix="ht2-benchmark-") as workdir:
        pairs = [
            prepare_pair(args, (model, baseline), t, base_treatment, device, entry, Path(workdir))
            for t in treatments
        ]
        rows: list[dict[str, Any]] = []
        layers: list[dict[str, Any]] = []
        for size in sizes:
            x = torch.randn(size, *entry.input_size, device=device)
            runners = [side for pair in pairs for side in pair if side is not None]
            names = [name for pair in pairs for name in side_names(args, pair)]
            prime(runners, x, names)
            timings = iter(time_models(runners, x, args.repeats, args.warmup, args.threads))
            for pair in pairs:
                timed = [next(timings) for side in pair if side is not None]
                rows.append(pair_row(size, pair, timed, macs))
            if args.per_layer:
                t = treatments[0]
                timed = time_layers(
                    model, x, args.repeats, args.warmup, args.threads, t.dtype, t.channels_last
                )
                layers += [layer_row(size, timing) for timing in timed]
    best = mark_best(rows, sizes, baseline is not None) if args.matrix else []
    result = summary(args, device, treatments, pairs, macs, rows, emulated)
    result["notes"] = notes
    if args.matrix:
        result["best"] = best
    if args.per_layer:
        result["layers"] = layers
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print_tables(args, result, sizes)
    return 0


def load_baseline(args: argparse.Namespace, entry: ModelEntry) -> nn.Module | None:
    """The --against model, checked to take inputs of MODEL's size; None without one."""
    if not args.against:
        return None
    baseline, baseline_entry = load_model_or_dir(args.against)
    if baseline_entry.input_size != entry.input_size:
        raise HT2Error(
            f"--against {args.against} takes inputs of size {baseline_entry.input_size} but "
            f"{args.model} takes {entry.input_size}: compare models of one input size"
        )
    return baseline


def prepare_pair(
    args: argparse.Namespace,
    models: tuple[nn.Module, nn.Module | None],
    treatment: Treatment,
    base_treatment: Treatment | None,
    device: torch.device,
    entry: ModelEntry,
    workdir: Any,
) -> tuple[Prepared, Prepared | None]:
    """MODEL under `treatment` and the baseline under the same one (or `base_treatment`)."""
    from ht2.export import OrtRunner
    from ht2.metrics.treatment import Prepared, treat

    model, baseline = models
    tag = "-".join(treatment.cells())
    options = {"input_size": entry.input_size, "workdir": workdir, "threads": args.threads}
    if args.onnx:
        runner = OrtRunner(args.onnx, args.threads)
        for size in parse_batch_sizes(args.batch_sizes):
            runner.check_input(size, entry.input_size, args.onnx)
        ours = Prepared(runner, treatment, None, onnx_file_folds(args.onnx) or 0)
    else:
        ours = treat(model, treatment, device, name=f"model-{tag}", **options)
    if baseline is None:
        return ours, None
    theirs = treat(baseline, base_treatment or treatment, device, name=f"baseline-{tag}", **options)
    return ours, theirs


def side_names(args: argparse.Namespace, pair: tuple[Prepared, Prepared | None]) -> list[str]:
    """How errors name the two sides of a pair."""
    return [args.model] + ([f"the baseline {args.against}"] if pair[1] is not None else [])


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / max(denominator, 1e-12)


def pair_row(
    size: int, pair: tuple[Prepared, Prepared | None], timings: list[Timing], macs: list[int]
) -> dict[str, Any]:
    """One batch size under one treatment: times, and with a baseline the speedup, the MAC
    reduction and the realized share of it (speedup / MAC reduction)."""
    row: dict[str, Any] = {
        "batch_size": size,
        "latency_ms": timings[0].median_ms,
        "latency_iqr_ms": timings[0].iqr_ms,
    }
    if pair[1] is not None:
        speedup = _ratio(timings[1].median_ms, timings[0].median_ms)
        reduction = macs[1] / max(macs[0], 1)
        row.update(
            baseline_latency_ms=timings[1].median_ms,
            baseline_latency_iqr_ms=timings[1].iqr_ms,
            speedup=speedup,
            mac_reduction=reduction,
            realized_over_mac=speedup / reduction,
        )
    row["treatment"] = pair[0].treatment.to_dict()
    if pair[1] is not None:
        row["baseline_treatment"] = pair[1].treatment.to_dict()
    return row


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["treatment"] == b["treatment"]


def mark_best(rows: list[dict[str, Any]], sizes: list[int], against: bool) -> list[dict[str, Any]]:
    """Per batch size, mark the fastest like-for-like pair (the treatment MODEL runs fastest
    in, the baseline in the same one) and, with a baseline, the best against the best (each
    model in its own fastest treatment); rows get "marks", the summary is returned."""
    best = []
    for size in sizes:
        here = [row for row in rows if row["batch_size"] == size]
        for row in here:
            row["marks"] = []
        fastest = min(here, key=lambda row: row["latency_ms"])
        fastest["marks"].append("fastest like-for-like pair" if against else "fastest")
        entry: dict[str, Any] = {"batch_size": size, "fastest_like_for_like": _pick(fastest)}
        if against:
            theirs = min(here, key=lambda row: row["baseline_latency_ms"])
            theirs["marks"].append("baseline's fastest")
            speedup = _ratio(theirs["baseline_latency_ms"], fastest["latency_ms"])
            entry["best_against_best"] = {
                "treatment": fastest["treatment"],
                "baseline_treatment": theirs["treatment"],
                "latency_ms": fastest["latency_ms"],
                "baseline_latency_ms": theirs["baseline_latency_ms"],
                "speedup": speedup,
                "realized_over_mac": speedup / fastest["mac_reduction"],
            }
        best.append(entry)
    return best


def _pick(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("treatment", "latency_ms", "baseline_latency_ms", "speedup", "realized_over_mac")
    return {key: row[key] for key in keys if key in row}


def summary(
    args: argparse.Namespace,
    device: torch.device,
    treatments: list[Treatment],
    pairs: list[tuple[Prepared, Prepared | None]],
    macs: list[int],
    rows: list[dict[str, Any]],
    emulated: bool,
) -> dict[str, Any]:
    """Everything measured, as JSON-ready data: settings, treatments, rows."""
    import torch

    result: dict[str, Any] = {
        "model": args.model,
        "against": args.against,
        "device": str(device),
        "threads": args.threads or torch.get_num_threads(),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "macs": macs[0],
        "matrix": bool(args.matrix),
    }
    ours, theirs = pairs[0]
    if not args.matrix:
        result["treatment"] = ours.treatment.to_dict()
        result["folded_bn"] = ours.folded
    if theirs is not None:
        result["baseline_macs"] = macs[1]
        result["matched"] = not args.unmatched_baseline
        if not args.matrix:
            result["baseline_treatment"] = theirs.treatment.to_dict()
            result["baseline_folded_bn"] = theirs.folded
    if args.onnx:
        result["onnx"] = args.onnx
    if any(t.runtime == "onnxruntime" for t in treatments):
        result["onnxruntime_threads"] = result["threads"]
    if emulated:
        result["bfloat16_emulated"] = True
    if not args.matrix:
        for row in rows:
            del row["treatment"]
            row.pop("baseline_treatment", None)
    result["rows"] = rows
    return result


def layer_row(batch_size: int, timing: LayerTiming) -> dict[str, Any]:
    """One factorized layer at one batch size, as JSON-ready data."""
    return {
        "batch_size": batch_size,
        "name": timing.name,
        "method": timing.method,
        "ranks": timing.ranks,
        "input_shape": list(timing.input_shape),
        "dense_ms": timing.dense.median_ms,
        "dense_iqr_ms": timing.dense.iqr_ms,
        "factorized_ms": timing.factorized.median_ms,
        "factorized_iqr_ms": timing.factorized.iqr_ms,
        "speedup": timing.speedup,
        "mac_reduction": timing.mac_reduction,
    }


def _ms(value: float) -> str:
    return f"{value:.3f}"


def _against_cells(row: dict[str, Any]) -> list[str]:
    return [
        _ms(row["baseline_latency_ms"]),
        _ms(row["baseline_latency_iqr_ms"]),
        f"{row['speedup']:.2f}x",
        f"{row['mac_reduction']:.2f}x",
        f"{row['realized_over_mac']:.2f}",
    ]


AGAINST_HEADERS = ["baseline ms", "baseline IQR ms", "speedup", "MAC reduction", "realized/MAC"]


def latency_table(rows: list[dict[str, Any]], against: bool) -> str:
    """Batch size, MODEL's median and IQR; with a baseline its figures, the speedup, the MAC
    reduction and the realized/MAC ratio."""
    headers = ["batch", "ms", "IQR ms", *(AGAINST_HEADERS if against else [])]
    lines = [
        [
            str(row["batch_size"]),
            _ms(row["latency_ms"]),
            _ms(row["latency_iqr_ms"]),
            *(_against_cells(row) if against else []),
        ]
        for row in rows
    ]
    return render(headers, lines)


def matrix_table(rows: list[dict[str, Any]], against: bool) -> str:
    """One line per batch size and treatment, with the marks of mark_best."""
    from ht2.metrics.treatment import Treatment

    headers = ["batch", "dtype", "format", "runtime", "BN", "ms", "IQR ms"]
    headers += [*(AGAINST_HEADERS if against else []), "mark"]
    lines = []
    for row in rows:
        treatment = row["treatment"]
        cells = Treatment(
            treatment["dtype"],
            treatment["memory_format"] == "channels_last",
            treatment["runtime"],
            treatment["fold_bn"],
        ).cells()
        lines.append(
            [
                str(row["batch_size"]),
                *cells,
                _ms(row["latency_ms"]),
                _ms(row["latency_iqr_ms"]),
                *(_against_cells(row) if against else []),
                "; ".join(row.get("marks", [])) or "-",
            ]
        )
    return render(headers, lines)


def layer_table(layers: list[dict[str, Any]]) -> str:
    """Every factorized layer: dense and factorized medians, speedup and MAC reduction."""
    headers = ["layer", "method", "ranks", "dense ms", "factorized ms", "speedup", "MAC reduction"]
    lines = [
        [
            layer["name"],
            layer["method"],
            " ".join(f"{k}={v}" for k, v in layer["ranks"].items()),
            _ms(layer["dense_ms"]),
            _ms(layer["factorized_ms"]),
            f"{layer['speedup']:.2f}x",
            f"{layer['mac_reduction']:.2f}x",
        ]
        for layer in layers
    ]
    return render(headers, lines)


def _describe(treatment: dict[str, Any]) -> str:
    layout = "NHWC" if treatment["memory_format"] == "channels_last" else "NCHW"
    fold = "folded" if treatment["fold_bn"] else "unfolded"
    return f"{treatment['dtype']}, {layout}, {treatment['runtime']}, BatchNorms {fold}"


def best_lines(result: dict[str, Any]) -> list[str]:
    """The marked pairs of a matrix, one line each."""
    lines = []
    for best in result["best"]:
        pick = best["fastest_like_for_like"]
        text = f"batch {best['batch_size']}: fastest like-for-like: {_describe(pick['treatment'])}"
        if "speedup" in pick:
            text += f", {pick['speedup']:.2f}x (realized/MAC {pick['realized_over_mac']:.2f})"
        lines.append(text)
        pair = best.get("best_against_best")
        if pair:
            lines.append(
                f"batch {best['batch_size']}: best against best: {result['model']} as "
                f"{_describe(pair['treatment'])} vs the baseline as "
                f"{_describe(pair['baseline_treatment'])}: {pair['speedup']:.2f}x "
                f"(realized/MAC {pair['realized_over_mac']:.2f})"
            )
    return lines


def print_tables(args: argparse.Namespace, result: dict[str, Any], sizes: Sequence[int]) -> None:
    against = bool(args.against)
    if args.matrix:
        print(matrix_table(result["rows"], against))
        for line in best_lines(result):
            print(line)
    else:
        print(latency_table(result["rows"], against))
    print(footnote(args, result))
    for note in result["notes"]:
        print(f"note: {note}")
    if args.per_layer:
        for size in sizes:
            print(
                f"\nper layer at batch size {size} (each on the input it sees in the model; "
                "eager PyTorch in the treatment's dtype and memory format):"
            )
            print(layer_table([layer for layer in result["layers"] if layer["batch_size"] == size]))


def footnote(args: argparse.Namespace, result: dict[str, Any]) -> str:
    """How the figures were taken, the treatment of each side, and the MACs compared."""
    threads = result["threads"]
    text = (
        f"median and interquartile range of {args.repeats} timed runs after {args.warmup} "
        f"warm-up runs, ms per batch; {result['device']}, {threads} "
        f"thread{'s' * (threads != 1)}; {args.model}: {result['macs']:,} MACs per sample"
    )
    if args.against:
        text += f"; baseline {args.against}: {result['baseline_macs']:,} MACs, run in turn with it"
        text += "; realized/MAC: speedup divided by the MAC reduction"
    if "treatment" in result:
        ours = _describe(result["treatment"])
        if not args.against:
            text += f"\ntreatment: {ours}"
        elif result["matched"]:
            text += f"\ntreatment of both models (like for like): {ours}"
        else:
            text += (
                f"\nUNMATCHED (--unmatched-baseline): {args.model} ran as {ours}, the baseline "
                f"as {_describe(result['baseline_treatment'])}; the speedup mixes compression "
                "with the treatment"
            )
    elif args.against:
        text += "\neach line: both models in that treatment (like for like)"
    if args.onnx:
        text += f"; {args.model} from {args.onnx}"
    if "onnxruntime_threads" in result:
        count = result["onnxruntime_threads"]
        text += f"; ONNX Runtime on the CPU with {count} intra-op thread" + "s" * (count != 1)
    if result.get("bfloat16_emulated"):
        text += "; bfloat16 emulated on this CPU"
    return text
