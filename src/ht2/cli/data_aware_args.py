"""`ht2 compress --data-aware`: the flags of the data-aware fit (the recipe fills what they
leave unset; `ht2.recipes` runs it)."""

from __future__ import annotations

import argparse

DATA_AWARE_CHOICES = ("whiten", "refit", "both", "off")


def add_data_aware_args(parser: argparse.ArgumentParser) -> None:
    """--data-aware MODE and its settings (it also uses --data and --calib-images)."""
    group = parser.add_argument_group("data-aware compression (needs --data)")
    group.add_argument(
        "--data-aware",
        choices=DATA_AWARE_CHOICES,
        help="fit the factors to what each layer sees on --calib-images training images: "
        "whiten (factors of the weight whitened by the input-channel covariance), refit "
        "(least-squares refit to the original layer outputs, layer by layer), both, or off "
        "(default: refit with --recipe best, off with --recipe paper)",
    )
    group.add_argument(
        "--rank-from",
        choices=("plain", "whitened"),
        help="ranks from the energy rule on the plain weights (same size as without "
        "--data-aware) or on the whitened ones (default: plain)",
    )
    group.add_argument(
        "--refit",
        choices=("last", "all", "blocks"),
        help="what the refit fits: the last 1x1 factor and bias; all factors jointly and then "
        "those; or blocks: all, then the factors inside each block (a residual block, an "
        "element of an nn.Sequential) fitted to the block's output, kept where that helps on "
        "held-out images (slower) (default: all)",
    )
    group.add_argument(
        "--no-refit-dense",
        dest="refit_dense",
        action="store_false",
        default=None,
        help="with a refit, leave the layers kept dense (such as a small classifier) as they "
        "are; by default those after a compressed layer are refitted to the original outputs "
        "too, which undoes part of the error that reaches them",
    )
    group.add_argument(
        "--bn-calibrate",
        choices=("auto", "always", "never"),
        help="re-estimate BatchNorm statistics after fitting: auto keeps them only if they "
        "bring held-out calibration images closer to the original (default: auto)",
    )


def data_aware_choices(args: argparse.Namespace) -> dict[str, object]:
    """The recipe settings these flags give (None where a flag was left out)."""
    return {
        "data_aware": args.data_aware,
        "rank_from": args.rank_from,
        "refit": args.refit,
        "refit_dense": args.refit_dense,
        "bn_calibrate": args.bn_calibrate,
    }
