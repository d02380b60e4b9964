"""`ht2 benchmark`: latency of a model, optionally against a baseline, whole and per layer."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ht2.cli.common import load_model_or_dir, parse_batch_sizes
from ht2.cli.number_args import non_negative_int, positive_int
from ht2.cli.tables import render
from ht2.errors import HT2Error

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ht2.metrics import LayerTiming
    from ht2.metrics.latency import Runnable
    from ht2.models import ModelEntry

DEFAULT_BATCH_SIZES = "1,32,128"

EXAMPLES = """examples:
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20
  ht2 benchmark out/r20-e0.8 --against cifar10_resnet20 --batch-sizes 1,128 --threads 4
  ht2 benchmark out/r20-e0.8 --per-layer --batch-sizes 32 --json
  ht2 benchmark resnet50 --device cuda --batch-sizes 1,64 --repeats 50
  ht2 benchmark out/r20 --channels-last --onnx out/r20-onnx/model.onnx --threads 1

A registry MODEL without --weights gets random weights: they do not change speed.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="time a model (and a baseline) per batch size, whole or layer by layer",
        description="Time MODEL or a compressed model folder DIR at each batch size; with "
        "--against, time a baseline in the same process, run by run in turn with it, and show "
        "the speedup and MAC reduction; --channels-last and --onnx FILE add MODEL in "
        "channels_last memory format and FILE in ONNX Runtime to the same table. Times are "
        "medians in ms per batch.",
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
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="also time MODEL in channels_last memory format (default: off)",
    )
    parser.add_argument(
        "--onnx",
        metavar="FILE",
        help="also time this .onnx file (from `ht2 export DIR --format onnx`) in ONNX Runtime "
        "on the CPU, with as many threads as PyTorch (default: none)",
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
        help="CPU threads for PyTorch (default: its choice)",
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
        help="untimed runs per model first (default: 3)",
    )
    parser.add_argument(
        "--per-layer",
        action="store_true",
        help="also time every factorized layer against its dense original (default: off)",
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


def total_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Analytic Conv/Linear MACs of one sample."""
    import torch

    from ht2.metrics import layer_macs

    return sum(layer_macs(model, torch.zeros(1, *input_size)).values())


VARIANTS = ("channels_last", "onnxruntime")  # timed beside MODEL; speedups are over MODEL


def variant_runners(
    args: argparse.Namespace,
    model: nn.Module,
    device: torch.device,
    sizes: list[int],
    entry: ModelEntry,
) -> dict[str, Runnable]:
    """MODEL in channels_last and the --onnx file in ONNX Runtime, as asked for."""
    from ht2.metrics.latency import ChannelsLast

    runners: dict[str, Runnable] = {}
    if args.channels_last:
        runners["channels_last"] = ChannelsLast(model)
    if args.onnx:
        if device.type != "cpu":
            raise HT2Error("--onnx runs ONNX Runtime on the CPU: drop --device cuda")
        from ht2.export.ort import OrtRunner

        runner = OrtRunner(args.onnx, args.threads)
        for size in sizes:
            runner.check_input(size, entry.input_size, args.onnx)
        runners["onnxruntime"] = runner
    return runners


def run(args: argparse.Namespace) -> int:
    import torch

    from ht2.device import resolve_device
    from ht2.metrics import factorized_layers, time_layers, time_models

    sizes = parse_batch_sizes(args.batch_sizes)
    check_counts(args)
    device = resolve_device(args.device)
    model, entry = load_model_or_dir(args.model, args.weights)
    contenders = [model]
    if args.against:
        baseline, baseline_entry = load_model_or_dir(args.against)
        if baseline_entry.input_size != entry.input_size:
            raise HT2Error(
                f"--against {args.against} takes inputs of size {baseline_entry.input_size} but "
                f"{args.model} takes {entry.input_size}: compare models of one input size"
            )
        contenders.append(baseline)
    if args.per_layer and not factorized_layers(model):
        raise HT2Error(
            f"--per-layer needs a compressed model: {args.model} has no factorized layer "
            "(give a folder written by `ht2 compress`)"
        )
    macs = [total_macs(m, entry.input_size) for m in contenders]
    contenders = [m.to(device).eval() for m in contenders]
    variants = variant_runners(args, contenders[0], device, sizes, entry)
    runners: list[Runnable] = [*contenders, *variants.values()]

    rows: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    for size in sizes:
        x = torch.randn(size, *entry.input_size, device=device)
        timings = time_models(runners, x, args.repeats, args.warmup, args.threads)
        row: dict[str, Any] = {
            "batch_size": size,
            "latency_ms": timings[0].median_ms,
            "latency_iqr_ms": timings[0].iqr_ms,
        }
        if args.against:
            row["baseline_latency_ms"] = timings[1].median_ms
            row["baseline_latency_iqr_ms"] = timings[1].iqr_ms
            row["speedup"] = timings[1].median_ms / max(timings[0].median_ms, 1e-12)
            row["mac_reduction"] = macs[1] / max(macs[0], 1)
        for name, timing in zip(variants, timings[len(contenders) :], strict=True):
            row[f"{name}_latency_ms"] = timing.median_ms
            row[f"{name}_latency_iqr_ms"] = timing.iqr_ms
            row[f"{name}_speedup"] = timings[0].median_ms / max(timing.median_ms, 1e-12)
        rows.append(row)
        if args.per_layer:
            for timing in time_layers(model, x, args.repeats, args.warmup, args.threads):
                layers.append(layer_row(size, timing))

    if args.json:
        result: dict[str, Any] = {
            "model": args.model,
            "against": args.against,
            "device": str(device),
            "threads": args.threads or torch.get_num_threads(),
            "repeats": args.repeats,
            "warmup": args.warmup,
            "macs": macs[0],
            "rows": rows,
        }
        if args.against:
            result["baseline_macs"] = macs[1]
        if args.channels_last:
            result["channels_last"] = True
        if args.onnx:
            result["onnx"] = args.onnx
            result["onnxruntime_threads"] = variants["onnxruntime"].threads
        if args.per_layer:
            result["layers"] = layers
        print(json.dumps(result, indent=1))
        return 0
    print(latency_table(rows, bool(args.against), list(variants)))
    print(footnote(args, device, macs))
    if args.per_layer:
        for size in sizes:
            print(f"\nper layer at batch size {size} (each on the input it sees in the model):")
            print(layer_table([layer for layer in layers if layer["batch_size"] == size]))
    return 0


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


def latency_table(rows: list[dict[str, Any]], against: bool, variants: Sequence[str] = ()) -> str:
    """Batch size, our median and IQR, with a baseline its figures, speedup and MAC ratio, and
    each variant's (channels_last, onnxruntime) median and speedup over MODEL."""
    headers = ["batch", "ms", "IQR ms"]
    if against:
        headers += ["baseline ms", "baseline IQR ms", "speedup", "MAC reduction"]
    for name in variants:
        headers += [f"{name} ms", f"{name} speedup"]
    lines = []
    for row in rows:
        cells = [str(row["batch_size"]), _ms(row["latency_ms"]), _ms(row["latency_iqr_ms"])]
        if against:
            cells += [
                _ms(row["baseline_latency_ms"]),
                _ms(row["baseline_latency_iqr_ms"]),
                f"{row['speedup']:.2f}x",
                f"{row['mac_reduction']:.2f}x",
            ]
        for name in variants:
            cells += [_ms(row[f"{name}_latency_ms"]), f"{row[f'{name}_speedup']:.2f}x"]
        lines.append(cells)
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


def footnote(args: argparse.Namespace, device: torch.device, macs: list[int]) -> str:
    """How the figures were taken, and the MACs they are compared with."""
    import torch

    threads = args.threads or torch.get_num_threads()
    text = (
        f"median and interquartile range of {args.repeats} timed runs after {args.warmup} "
        f"warm-up runs, ms per batch; {device}, {threads} thread{'s' * (threads != 1)}; "
        f"{args.model}: {macs[0]:,} MACs per sample"
    )
    if args.against:
        text += f"; baseline {args.against}: {macs[1]:,} MACs, run in turn with it"
    if args.channels_last or args.onnx:
        text += "; channels_last and onnxruntime speedups are over MODEL in eager PyTorch"
    if args.onnx:
        text += f"; ONNX Runtime {args.onnx} on the CPU with {threads} intra-op thread" + (
            "s" * (threads != 1)
        )
    return text
