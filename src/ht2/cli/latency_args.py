"""`ht2 compress --latency-aware`: its arguments, and running the form choice after compression."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ht2.choices import DTYPES, FORM_RUNTIMES, RUNTIMES, layout_name
from ht2.cli.common import energy_value, first_given
from ht2.cli.number_args import positive_int
from ht2.cli.rank_args import reduction_factor
from ht2.cli.tables import render
from ht2.errors import HT2Error

if TYPE_CHECKING:
    from ht2.planning.rounding import AutoRounding
    from ht2.surgery import CompressionReport
    from ht2.surgery.latency_aware import FormTiming


def add_latency_args(parser: argparse.ArgumentParser) -> None:
    """--latency-aware and the device, batch size, dtype, memory format and runtime it times
    with; --allow-dense. It times on the command's --threads (add_threads_arg)."""
    group = parser.add_argument_group("latency-aware execution forms")
    group.add_argument(
        "--latency-aware",
        action="store_true",
        help="time the equivalent forms of each factorized layer's factors (four convs, "
        "merged ones) that are no larger than the layer as decomposed, on --device at "
        "--batch-size in --dtype, --channels-last and --runtime, then the whole model with each "
        "layer's fastest form and as decomposed, and keep the faster; the plan records the "
        "forms (default: off, every layer as decomposed)",
    )
    group.add_argument(
        "--target-speedup",
        type=reduction_factor,  # '2' or '2x', above 1
        metavar="X",
        help="choose every layer's ranks, form, or the dense layer, so that the model runs X "
        "times faster than the original where --device, --batch-size, --dtype, "
        "--channels-last and --runtime say (each layer timed dense and at a grid of energies, "
        "the least spectral damage that fits, then the whole model timed to check); out of "
        "reach: the fastest plan, with a note; not with --target-params/--target-macs, --ranks "
        "or --plan (default: off)",
    )
    group.add_argument(
        "--min-energy",
        type=energy_value,
        metavar="E",
        help="with --target-speedup, time no layer at an energy below E (the grid is 0.2, "
        "0.35, 0.5, 0.65, 0.8, 0.9, 0.95): speed is then not bought with layers that keep "
        "almost nothing, and a target out of reach says so (default: the whole grid)",
    )
    group.add_argument(
        "--allow-dense",
        action="store_true",
        help="with --latency-aware, let any form win, larger merged ones and the dense weight "
        "included (and the whole model all dense); this gives back size the energy or target "
        "bought, and the summary says how much (default: off, the size is kept)",
    )
    group.add_argument(
        "--dtype",
        choices=DTYPES,
        help="dtype to time the forms in, with --latency-aware; bfloat16 under autocast "
        "(default: float32)",
    )
    group.add_argument(
        "--channels-last",
        action="store_true",
        help="time the forms in channels_last memory format, with --latency-aware "
        "(default: off, NCHW)",
    )
    group.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="time in eager PyTorch or torch.compile (compiles every form of every layer: "
        "minutes); --target-speedup also takes onnxruntime and openvino, in which it times the "
        "whole models (its layers alone in eager) (default: eager)",
    )
    group.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="device to time the forms on, with --latency-aware (default: cpu)",
    )
    group.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        metavar="N",
        help="batch size to time the forms at, with --latency-aware (default: 1)",
    )


def check_latency_args(args: argparse.Namespace) -> None:
    """Fail before compressing when --latency-aware or --target-speedup asks for a device that
    is not here, or a timing flag comes without either; warn when bfloat16 would be emulated."""
    from ht2.device import resolve_device
    from ht2.metrics.treatment import warn_if_emulated

    if args.target_speedup is not None:
        clashing = first_given(
            ("--target-params", args.target_params is not None),
            ("--target-macs", args.target_macs is not None),
            ("--ranks", bool(args.ranks)),
            ("--rank-rule vbmf", args.rank_rule != "energy"),
            ("--plan", bool(getattr(args, "plan", None))),
            ("--allocate", getattr(args, "allocate", None) not in (None, "uniform")),
        )
        if clashing:
            raise HT2Error(f"--target-speedup chooses every layer's ranks; drop {clashing}")
    if args.min_energy is not None and args.target_speedup is None:
        raise HT2Error("--min-energy bounds what --target-speedup times: add --target-speedup")
    if args.allow_dense and not args.latency_aware:
        raise HT2Error(
            "--allow-dense lets --latency-aware give size back: add --latency-aware"
            + (
                ""
                if args.target_speedup is None
                else " (--target-speedup keeps a layer dense wherever that is faster anyway)"
            )
        )
    layer_timing = args.latency_aware or args.round_ranks == "auto"
    if layer_timing and args.runtime not in (None, *FORM_RUNTIMES):
        flag = "--latency-aware" if args.latency_aware else "--round-ranks auto"
        raise HT2Error(
            f"{flag} times layers in {' or '.join(FORM_RUNTIMES)}, not {args.runtime} "
            "(--target-speedup times whole models in it)"
        )
    if args.target_speedup is not None and args.round_ranks == "auto":
        raise HT2Error(
            "--target-speedup times its own ranks: give --round-ranks a number, not auto"
        )
    if not timed(args):
        given = first_given(
            ("--dtype", args.dtype),
            ("--channels-last", args.channels_last),
            ("--runtime", args.runtime),
        )
        if given:
            raise HT2Error(
                f"{given} says where --latency-aware, --target-speedup or --round-ranks auto "
                "time layers: add one of them"
            )
        return
    warn_if_emulated(args.dtype or "float32", resolve_device(args.device))


def timed(args: argparse.Namespace) -> bool:
    """Whether a flag asks for layers to be timed (so the timing flags mean something)."""
    return args.latency_aware or args.target_speedup is not None or args.round_ranks == "auto"


def form_timing(args: argparse.Namespace) -> FormTiming | None:
    """How --latency-aware times forms, or --target-speedup layers (None without either)."""
    if not (args.latency_aware or args.target_speedup is not None):
        return None
    return timing_of(args)


def rounding_of(args: argparse.Namespace) -> int | AutoRounding:
    """--round-ranks: the multiple, or auto with where to time the layers."""
    from ht2.planning.rounding import AutoRounding

    if args.round_ranks == "auto":
        return AutoRounding(timing_of(args))
    return args.round_ranks


def timing_of(args: argparse.Namespace) -> FormTiming:
    """Where and how the timing flags say layers are timed."""
    from ht2.metrics.treatment import Treatment
    from ht2.surgery.latency_aware import FormTiming

    return FormTiming(
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        allow_dense=args.allow_dense,
        treatment=Treatment(args.dtype or "float32", args.channels_last, args.runtime or "eager"),
    )


def print_forms(report: CompressionReport) -> None:
    """The forms --latency-aware kept and timed, on stderr (nothing when it did not run)."""
    summary = report.latency_aware
    if not summary:
        return
    layout = layout_name(summary.get("memory_format"))
    where = (
        f"{summary['device']}, batch {summary['batch_size']}, {summary['dtype']}, {layout}, "
        f"{summary['runtime']}"
    )
    print(f"forms timed on {where} (median ms per call):", file=sys.stderr)
    print(forms_table(report), file=sys.stderr)


def forms_table(report: CompressionReport) -> str:
    """One line per layer (the form kept, median ms of every form timed) and the model check."""
    summary = report.latency_aware or {}
    layers = [line for line in report.layers if line.form_times_ms is not None]
    over = summary.get("over_budget") or {}
    forms = list(
        dict.fromkeys(
            form for line in layers for form in (*line.form_times_ms, *over.get(line.name, ()))
        )
    )

    def cell(line, form: str) -> str:
        if form in line.form_times_ms:
            return f"{line.form_times_ms[form]:.3f}"
        return "-" if form in over.get(line.name, ()) else "n/a"

    rows = [[line.name, line.form, *(cell(line, f) for f in forms)] for line in layers]
    lines = [render(["layer", "form kept", *(f"{f} ms" for f in forms)], rows)]
    if any(over.values()):
        lines.append(
            "-: not timed, larger than the layer as decomposed or dense (--allow-dense times "
            "them); n/a: not a form of that layer"
        )
    model_ms = summary.get("model_ms") or {}
    if model_ms:
        times = ", ".join(f"{key} {ms:.3f}" for key, ms in model_ms.items())
        kept = summary["kept"]
        lines.append(f"whole model, ms: {times} (dense: the original's cost); kept: {kept}")
        speedup = summary.get("speedup_vs_dense")
        if speedup is not None and speedup < 1:
            lines.append(
                f"the kept layout runs slower than the original's cost here ({speedup:.2f}x); "
                "--allow-dense lets layers run dense, giving size back"
            )
    return "\n".join(lines)
