"""`ht2 benchmark`: latency of a model, optionally against a baseline run the same way."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ht2.choices import DTYPES, EXPORTED_RUNTIMES, RUNTIMES, treatment_phrase
from ht2.cli.common import first_given, parse_batch_sizes
from ht2.cli.number_args import non_negative_int, positive_int
from ht2.cli.tables import render
from ht2.cli.threads_arg import add_threads_arg
from ht2.errors import HT2Error
from ht2.io.model_source import load_model_or_dir

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ht2.metrics.like_for_like import SpeedComparison
    from ht2.metrics.treatment import Treatment
    from ht2.models import ModelEntry

DEFAULT_BATCH_SIZES = "1,32,128"

EXAMPLES = """examples:
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20 --fold-bn --channels-last --threads 1
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20 --dtype bfloat16 --runtime compile
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20 --runtime onnxruntime --threads 1
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20 --runtime openvino --dtype bfloat16
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
        help="bfloat16 runs both models under autocast, weights kept in float32; in OpenVINO "
        "it is the inference precision (default: float32)",
    )
    treatment.add_argument(
        "--channels-last",
        action="store_true",
        help="run both models in channels_last memory format (default: off, NCHW)",
    )
    treatment.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="eager PyTorch, torch.compile, or ONNX Runtime or OpenVINO on the CPU (both "
        "models exported to a temporary folder; need pip install 'ht2[onnx]' or "
        "'ht2[openvino]') (default: eager)",
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
    add_threads_arg(parser)
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


def treatments_asked(
    args: argparse.Namespace, device: torch.device, folded: bool
) -> tuple[list[Treatment], list[str]]:
    """The treatments to time (one, or the matrix) and notes on what the matrix left out."""
    from ht2.metrics.like_for_like import treatment_matrix
    from ht2.metrics.treatment import Treatment

    if not args.matrix:
        runtime = "onnxruntime" if args.onnx else args.runtime or "eager"
        fold = args.fold_bn or folded
        return [Treatment(args.dtype or "float32", args.channels_last, runtime, fold)], []
    treatments, notes = treatment_matrix(
        device, args.dtype, args.channels_last, args.runtime, args.fold_bn, folded
    )
    if not treatments:
        raise HT2Error(f"no treatment of --matrix runs on {device} with the flags given")
    return treatments, notes


def run(args: argparse.Namespace) -> int:
    from ht2.device import resolve_device
    from ht2.io.folds import folds_of
    from ht2.metrics import factorized_layers
    from ht2.metrics.like_for_like import compare_speed, onnx_file_folds
    from ht2.metrics.treatment import Treatment, check_treatment, warn_if_emulated

    sizes = parse_batch_sizes(args.batch_sizes)
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
    measured = compare_speed(
        model,
        baseline,
        entry.input_size,
        treatments,
        sizes,
        device,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        base_treatment=base_treatment,
        onnx=args.onnx,
        per_layer=args.per_layer,
        mark=args.matrix,
        names=(args.model, f"the baseline {args.against}"),
    )
    result = summary(args, device, treatments, measured, emulated)
    result["notes"] = notes
    if args.matrix:
        result["best"] = measured.best
    if args.per_layer:
        result["layers"] = measured.layers
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


def summary(
    args: argparse.Namespace,
    device: torch.device,
    treatments: list[Treatment],
    measured: SpeedComparison,
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
        "macs": measured.macs,
        "matrix": bool(args.matrix),
    }
    if not args.matrix:
        result["treatment"] = measured.treatment.to_dict()
        result["folded_bn"] = measured.folded
    if measured.baseline_treatment is not None:
        result["baseline_macs"] = measured.baseline_macs
        result["matched"] = not args.unmatched_baseline
        if not args.matrix:
            result["baseline_treatment"] = measured.baseline_treatment.to_dict()
            result["baseline_folded_bn"] = measured.baseline_folded
    if args.onnx:
        result["onnx"] = args.onnx
    for runtime in EXPORTED_RUNTIMES:
        if any(t.runtime == runtime for t in treatments):
            result[f"{runtime}_threads"] = result["threads"]
    if emulated:
        result["bfloat16_emulated"] = True
    rows = measured.rows
    if not args.matrix:
        for row in rows:
            del row["treatment"]
            row.pop("baseline_treatment", None)
    result["rows"] = rows
    return result


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


def best_lines(result: dict[str, Any]) -> list[str]:
    """The marked pairs of a matrix, one line each."""
    lines = []
    for best in result["best"]:
        pick = best["fastest_like_for_like"]
        fastest = treatment_phrase(pick["treatment"])
        text = f"batch {best['batch_size']}: fastest like-for-like: {fastest}"
        if "speedup" in pick:
            text += f", {pick['speedup']:.2f}x (realized/MAC {pick['realized_over_mac']:.2f})"
        lines.append(text)
        pair = best.get("best_against_best")
        if pair:
            lines.append(
                f"batch {best['batch_size']}: best against best: {result['model']} as "
                f"{treatment_phrase(pair['treatment'])} vs the baseline as "
                f"{treatment_phrase(pair['baseline_treatment'])}: {pair['speedup']:.2f}x "
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
        ours = treatment_phrase(result["treatment"])
        if not args.against:
            text += f"\ntreatment: {ours}"
        elif result["matched"]:
            text += f"\ntreatment of both models (like for like): {ours}"
        else:
            text += (
                f"\nUNMATCHED (--unmatched-baseline): {args.model} ran as {ours}, the baseline "
                f"as {treatment_phrase(result['baseline_treatment'])}; the speedup mixes "
                "compression with the treatment"
            )
    elif args.against:
        text += "\neach line: both models in that treatment (like for like)"
    if args.onnx:
        text += f"; {args.model} from {args.onnx}"
    if "onnxruntime_threads" in result:
        count = result["onnxruntime_threads"]
        text += f"; ONNX Runtime on the CPU with {count} intra-op thread" + "s" * (count != 1)
    if "openvino_threads" in result:
        count = result["openvino_threads"]
        text += f"; OpenVINO on the CPU with {count} inference thread" + "s" * (count != 1)
    if result.get("bfloat16_emulated"):
        text += "; bfloat16 emulated on this CPU"
    return text
