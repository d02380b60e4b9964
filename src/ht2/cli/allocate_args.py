"""`ht2 compress --allocate`: how a size target is spread over the layers, and its plot."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ht2.choices import ALLOCATIONS
from ht2.choices import SENSITIVITY_ENERGIES as CANDIDATES

if TYPE_CHECKING:
    from ht2.surgery import CompressionReport


def energy_list(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated energies strictly between 0 and 1."""
    try:
        values = tuple(sorted({float(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected energies such as 0.5,0.8,0.9, got {text!r}"
        ) from None
    if not values or any(not 0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"energies must lie strictly between 0 and 1: {text!r}")
    return values


def add_allocate_args(parser: argparse.ArgumentParser) -> None:
    """--allocate, --candidates, --no-bn-aware and --plots."""
    group = parser.add_argument_group("allocation of a size target across layers")
    group.add_argument(
        "--allocate",
        choices=ALLOCATIONS,
        help="with --target-params/--target-macs: uniform (one energy for every layer, as "
        "the paper), spectrum (one threshold on singular values as shares of each unfolding's "
        "energy, pooled across layers), or sensitivity (each layer's damage to the output "
        "measured on --calib-images training images, default 256, needs --data; then the "
        "per-layer energies of least summed damage; default: sensitivity with --recipe best, "
        "uniform with --recipe paper)",
    )
    group.add_argument(
        "--candidates",
        type=energy_list,
        metavar="E,E,...",
        help="energies at which sensitivity measures each layer "
        f"(default: {','.join(f'{e:g}' for e in CANDIDATES)})",
    )
    group.add_argument(
        "--no-bn-aware",
        dest="bn_aware",
        action="store_false",
        default=None,
        help="measure sensitivity with the stored BatchNorm statistics instead of those of "
        "the calibration images (default: BN-aware, as after --calibrate)",
    )
    group.add_argument(
        "--plots",
        action="store_true",
        help="also write allocation.png: parameters and ranks kept per layer (default: off)",
    )


def allocate_choices(args: argparse.Namespace) -> dict[str, object]:
    """The recipe settings these flags give (None where a flag was left out)."""
    return {"allocate": args.allocate, "candidates": args.candidates, "bn_aware": args.bn_aware}


def write_allocation_plot(
    args: argparse.Namespace, folder: Path, report: CompressionReport
) -> None:
    """With --plots, folder/allocation.png for this one compression."""
    if not args.plots:
        return
    from ht2.experiments.allocation_plot import plot_allocation

    allocation = (report.target or {}).get("allocation", "uniform")
    label = f"{report.method}, {allocation}"
    title = f"{report.model}: {report.param_reduction:.2f}x fewer parameters ({label})"
    plot_allocation({label: report}, folder / "allocation.png", title)
