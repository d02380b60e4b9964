"""`ht2 compress --data-aware`: its arguments and the branch that runs it."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from ht2 import models
from ht2.errors import HT2Error

if TYPE_CHECKING:
    from ht2.surgery import CompressionReport

DEFAULT_IMAGES = 512


def add_data_aware_args(parser: argparse.ArgumentParser) -> None:
    """--data-aware MODE and its settings (it also uses --data and --calib-images)."""
    group = parser.add_argument_group("data-aware compression (needs --data)")
    group.add_argument(
        "--data-aware",
        choices=("whiten", "refit", "both"),
        help="fit the factors to what each layer sees on --calib-images training images: "
        "whiten (factors of the weight whitened by the input-channel covariance), refit "
        "(least-squares refit to the original layer outputs, layer by layer), or both "
        "(default: off); pairs well with --allocate spectrum and --target-params",
    )
    group.add_argument(
        "--rank-from",
        choices=("plain", "whitened"),
        default="plain",
        help="ranks from the energy rule on the plain weights (same size as without "
        "--data-aware) or on the whitened ones (default: plain)",
    )
    group.add_argument(
        "--refit",
        choices=("last", "all"),
        default="all",
        help="what the refit fits: the last 1x1 factor and bias, or all factors jointly "
        "and then those (default: all)",
    )
    group.add_argument(
        "--no-refit-dense",
        dest="refit_dense",
        action="store_false",
        help="with a refit, leave the layers kept dense (such as a small classifier) as they "
        "are; by default those after a compressed layer are refitted to the original outputs "
        "too, which undoes part of the error that reaches them",
    )
    group.add_argument(
        "--bn-calibrate",
        choices=("auto", "always", "never"),
        default="auto",
        help="re-estimate BatchNorm statistics after fitting: auto keeps them only if they "
        "bring held-out calibration images closer to the original (default: auto)",
    )


def calib_image_count(args: argparse.Namespace) -> int:
    """--calib-images, or its default: 512 for --data-aware, 2048 for --calibrate alone."""
    if args.calib_images is None:
        return DEFAULT_IMAGES if args.data_aware else 2048
    if args.calib_images < 1:
        raise HT2Error(f"--calib-images must be at least 1, not {args.calib_images}")
    return args.calib_images


def check_data_aware(args: argparse.Namespace) -> None:
    """One-line errors for a data-aware request that cannot run, before any work."""
    if args.data_aware and not args.data:
        raise HT2Error("--data-aware needs --data PATH (a folder with train/)")
    if args.data_aware and args.calibrate:
        raise HT2Error(
            "--data-aware decides on BatchNorm calibration itself; use --bn-calibrate "
            "instead of --calibrate"
        )
    if not args.data_aware and (
        args.rank_from != "plain" or args.refit != "all" or not args.refit_dense
    ):
        raise HT2Error("--rank-from, --refit and --no-refit-dense only apply with --data-aware")
    calib_image_count(args)


def data_aware_or_plain(args: argparse.Namespace, plain: Callable[..., CompressionReport]):
    """`plain` (ht2.compress) unless --data-aware is given; then a function taking the same
    arguments that compresses with the factors fitted to training images."""
    if not args.data_aware:
        return plain
    from ht2.data import make_loader, train_dataset  # torchvision: only when data is read
    from ht2.dataaware import DataAwareOptions, compress_data_aware

    count = calib_image_count(args)
    dataset = train_dataset(args.data, models.get_entry(args.model), augment=False, limit=count)
    if len(dataset) < count:
        raise HT2Error(
            f"only {len(dataset)} training images in {args.data}, fewer than --calib-images "
            f"{count}; lower --calib-images"
        )
    options = DataAwareOptions(
        mode=args.data_aware,
        rank_from=args.rank_from,
        refit=args.refit,
        bn=args.bn_calibrate,
        refit_dense=args.refit_dense,
    )
    return functools.partial(
        compress_data_aware,
        batches=make_loader(dataset, 256, workers=2),
        calib_images=count,
        options=options,
    )
