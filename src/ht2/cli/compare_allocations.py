"""`ht2 compare --allocations`: the allocators compare runs for every method and target."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ht2.choices import ALLOCATIONS
from ht2.errors import HT2Error

if TYPE_CHECKING:
    from ht2.models import ModelEntry

SENSITIVITY_IMAGES = 256


def allocation_names(text: str) -> list[str]:
    """argparse type: comma-separated allocation names."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in ALLOCATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"allocations are {', '.join(ALLOCATIONS)}; got {text!r}")
    return list(dict.fromkeys(names))


def add_allocations_arg(parser: argparse.ArgumentParser) -> None:
    """--allocations uniform,spectrum,sensitivity."""
    parser.add_argument(
        "--allocations",
        type=allocation_names,
        default=["uniform"],
        metavar="A,B",
        help="how each target is spread over the layers, one row each: uniform (one energy), "
        "spectrum (one threshold on normalised singular values), sensitivity (measured on "
        f"{SENSITIVITY_IMAGES} training images, once per method) (default: uniform)",
    )


def compare_allocators(args: argparse.Namespace, entry: ModelEntry) -> dict[str, Any]:
    """An allocator per name in --allocations, for run_compare (sensitivity: its loader)."""
    from ht2.experiments.compare import AllocationRequest
    from ht2.surgery.allocate import allocate
    from ht2.surgery.sensitivity import SensitivityOptions

    loader = None
    if "sensitivity" in args.allocations:
        from ht2.data import make_loader, train_dataset

        dataset = train_dataset(args.data, entry, augment=False, limit=SENSITIVITY_IMAGES)
        if len(dataset) == 0:
            raise HT2Error(f"no training images in {args.data} for the sensitivity allocation")
        loader = make_loader(dataset, SENSITIVITY_IMAGES, args.workers)
    cache: dict = {}

    def allocator_for(name: str):
        def allocator(request: AllocationRequest) -> dict[str, Any]:
            chosen = allocate(
                request.model,
                request.method,
                request.target,
                name,
                request.example_input,
                loader,
                images=min(SENSITIVITY_IMAGES, len(loader.dataset)) if loader else 0,
                keep_if_larger=args.keep_if_larger,
                options=SensitivityOptions(sweeps=args.refine_sweeps),
                cache=cache,
            )
            return chosen.compress_kwargs()

        return allocator

    return {name: allocator_for(name) for name in args.allocations}
