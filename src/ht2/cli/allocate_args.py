"""`ht2 compress --allocate`: how a size target is spread over the layers, and its plot."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ht2 import models
from ht2.choices import ALLOCATIONS
from ht2.choices import SENSITIVITY_ENERGIES as CANDIDATES
from ht2.cli.common import example_input
from ht2.errors import HT2Error

if TYPE_CHECKING:
    from torch import nn

    from ht2.surgery import CompressionReport
    from ht2.surgery.allocate import Allocation

SENSITIVITY_IMAGES = 256  # when --calib-images is not given


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
        default="uniform",
        help="with --target-params/--target-macs: uniform (one energy for every layer, as "
        "the paper), spectrum (one threshold on singular values as shares of each unfolding's "
        "energy, pooled across layers), or sensitivity (each layer's damage to the output "
        "measured on --calib-images training images, default 256, needs --data; then the "
        "per-layer energies of least summed damage; default: uniform)",
    )
    group.add_argument(
        "--candidates",
        type=energy_list,
        default=CANDIDATES,
        metavar="E,E,...",
        help="energies at which sensitivity measures each layer "
        f"(default: {','.join(f'{e:g}' for e in CANDIDATES)})",
    )
    group.add_argument(
        "--no-bn-aware",
        dest="bn_aware",
        action="store_false",
        help="measure sensitivity with the stored BatchNorm statistics instead of those of "
        "the calibration images (default: BN-aware, as after --calibrate)",
    )
    group.add_argument(
        "--plots",
        action="store_true",
        help="also write allocation.png: parameters and ranks kept per layer (default: off)",
    )


def check_allocate_args(args: argparse.Namespace, target: Any) -> None:
    """One-line errors for an allocation that cannot run, before the model is built."""
    from ht2.surgery.allocate import check_allocation

    check_allocation(args.allocate, target, bool(args.data))
    if args.allocate != "uniform" and (args.ranks or args.rank_rule != "energy"):
        raise HT2Error(
            f"--allocate {args.allocate} chooses every layer's ranks; "
            "do not combine it with --ranks or --rank-rule vbmf"
        )


def _loader(args: argparse.Namespace, count: int):
    from ht2.data import make_loader, train_dataset  # torchvision: only when data is read

    dataset = train_dataset(args.data, models.get_entry(args.model), augment=False, limit=count)
    if len(dataset) < count:
        raise HT2Error(
            f"only {len(dataset)} training images in {args.data}, fewer than --calib-images "
            f"{count}; lower --calib-images"
        )
    return make_loader(dataset, 256, workers=2)


def allocate_from_args(
    args: argparse.Namespace, model: nn.Module, options: dict[str, Any]
) -> tuple[Allocation, dict[str, Any]]:
    """The allocation asked for and the compress() options (`options` from rank_options)
    that carry it out."""
    from ht2.surgery.allocate import Allocation, allocate
    from ht2.surgery.sensitivity import SensitivityOptions

    target = options.get("target")
    if target is None:
        return Allocation("uniform", None), options
    count = args.calib_images or SENSITIVITY_IMAGES
    loader = _loader(args, count) if args.allocate == "sensitivity" else None
    chosen = allocate(
        model,
        args.method,
        target,
        args.allocate,
        example_input(args.model),
        loader,
        images=count,
        include=args.include,
        exclude=args.exclude,
        keep_if_larger=args.keep_if_larger,
        round_ranks=options.get("round_ranks", 1),
        options=SensitivityOptions(
            candidates=args.candidates,
            bn_aware=args.bn_aware,
            sweeps=options.get("refine_sweeps", 0),
        ),
        progress=not args.json,
    )
    return chosen, {**options, "target": None, **chosen.compress_kwargs()}


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
