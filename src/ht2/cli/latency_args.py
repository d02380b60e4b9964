"""`ht2 compress --latency-aware`: its arguments, and running the form choice after compression."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ht2.cli.number_args import positive_int
from ht2.cli.tables import render

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ht2.surgery import CompressionReport
    from ht2.surgery.latency_aware import FormChoices


def add_latency_args(parser: argparse.ArgumentParser) -> None:
    """--latency-aware and the device, batch size and threads it times with."""
    group = parser.add_argument_group("latency-aware execution forms")
    group.add_argument(
        "--latency-aware",
        action="store_true",
        help="time every equivalent form of each factorized layer (four convs, merged ones, "
        "dense) on --device at --batch-size, then the whole model with each layer's fastest "
        "form, as decomposed and all dense, and keep the fastest; the plan records the forms "
        "(default: off, every layer as decomposed)",
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
    group.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads while timing, with --latency-aware (default: PyTorch's choice)",
    )


def check_latency_args(args: argparse.Namespace) -> None:
    """Fail before compressing when --latency-aware asks for a device that is not here."""
    from ht2.device import resolve_device

    if args.latency_aware:
        resolve_device(args.device)


def apply_latency_aware(
    args: argparse.Namespace,
    model: nn.Module,
    report: CompressionReport,
    example_input: torch.Tensor,
) -> None:
    """With --latency-aware, put each factorized layer in its fastest form and record it."""
    from ht2.surgery.latency_aware import choose_forms, record_forms

    if not args.latency_aware:
        return
    choices = choose_forms(
        model,
        example_input,
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    record_forms(report, choices, model, example_input)
    where = f"{args.device}, batch {args.batch_size}"
    print(f"forms timed on {where} (median ms per call):", file=sys.stderr)
    print(forms_table(choices), file=sys.stderr)


def forms_table(choices: FormChoices) -> str:
    """One line per layer (the form kept, median ms of every form timed) and the model check."""
    layers = choices.layers
    forms = list(dict.fromkeys(form for choice in layers for form in choice.times_ms))
    rows = [
        [
            choice.name,
            choice.form,
            *(f"{choice.times_ms[f]:.3f}" if f in choice.times_ms else "-" for f in forms),
        ]
        for choice in layers
    ]
    lines = [render(["layer", "form kept", *(f"{f} ms" for f in forms)], rows)]
    if choices.model_ms:
        times = ", ".join(f"{key} {ms:.3f}" for key, ms in choices.model_ms.items())
        lines.append(f"whole model, ms: {times} (dense: the original's cost); kept: {choices.kept}")
    return "\n".join(lines)
