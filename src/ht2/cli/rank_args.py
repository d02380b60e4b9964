"""Flags that choose ranks: a size target, a ranks file, the rank rule, rank rounding."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ht2.choices import RANK_RULES
from ht2.cli.common import energy_value
from ht2.cli.number_args import positive_int, whole_number
from ht2.io.rank_file import read_rank_file
from ht2.surgery.targets import Target, parse_factor


def reduction_factor(text: str) -> float:
    """argparse type: '4' or '4x', a reduction factor above 1."""
    try:
        value = parse_factor(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"a reduction factor must be finite, got {text!r}")
    if not value > 1:
        raise argparse.ArgumentTypeError(f"a reduction factor must be above 1, got {text!r}")
    return value


def rank_multiple(text: str) -> int | str:
    """argparse type: a positive whole number, or auto."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number or auto, got {text!r}"
        ) from None


MAX_REFINE_SWEEPS = 1000  # as a plan file allows; 10 is plenty (each sweep costs a decomposition)
sweep_count = whole_number(0, "a whole number >= 0", quote=True, high=MAX_REFINE_SWEEPS)


def add_rank_args(parser: argparse.ArgumentParser) -> None:
    """--energy or --target-params/--target-macs (one of them: a target chooses the energy),
    --ranks, --rank-rule, --round-ranks, --refine-sweeps."""
    group = parser.add_argument_group("rank choice (default: the energy rule at --energy)")
    targets = group.add_mutually_exclusive_group()
    targets.add_argument(
        "--energy",
        type=energy_value,
        default=0.9,
        help="fraction of singular-value energy each rank keeps, in (0, 1]; lower is smaller; "
        "not with --target-params/--target-macs, which choose it (default: 0.9)",
    )
    targets.add_argument(
        "--target-params",
        type=reduction_factor,
        metavar="X",
        help="choose the one energy that makes the whole model X times smaller in parameters, "
        "such as 4 or 4x (within 2 %%, else the nearest reachable; default: off)",
    )
    targets.add_argument(
        "--target-macs",
        type=reduction_factor,
        metavar="X",
        help="as --target-params, for multiply-accumulates per image (default: off)",
    )
    group.add_argument(
        "--ranks",
        metavar="FILE.json",
        help='per-layer ranks: {"layer.name": {"r1": 8, "r13": 12, "r3": 8}, ...} or a '
        "report.json/ht2.json to replay; other layers follow the rank rule (default: none)",
    )
    group.add_argument(
        "--rank-rule",
        choices=RANK_RULES,
        default="energy",
        help="energy: keep --energy of each unfolding's singular-value energy (the paper); "
        "vbmf: empirical variational Bayesian matrix factorisation per unfolding, as Kim et "
        "al. (no energy needed; default: energy)",
    )
    group.add_argument(
        "--round-ranks",
        type=rank_multiple,
        default=1,
        metavar="N|auto",
        help="round every rank up to a multiple of N (the report shows the parameter cost); "
        "auto: time the planned layers at multiples 1, 4, 8, 16 and 32 on --device at "
        "--batch-size in --dtype, --channels-last and --runtime, and keep the fastest "
        "(default: 1, no rounding)",
    )
    group.add_argument(
        "--refine-sweeps",
        type=sweep_count,
        metavar="N",
        help="after the one-pass factors, N rounds of alternating least squares (HT-2) or "
        "HOOI (Tucker-2) that lower each layer's weight error at the same ranks, at no cost "
        "in size; 10 is plenty (default: 10 with --recipe best, 0 with --recipe paper: the "
        "paper's factors)",
    )


def rank_options(args: argparse.Namespace) -> dict[str, Any]:
    """The compress() keyword arguments these flags stand for."""
    target = None
    if args.target_params is not None:
        target = Target("params", args.target_params)
    elif args.target_macs is not None:
        target = Target("macs", args.target_macs)
    return {
        "target": target,
        "rank_rule": args.rank_rule,
        "layer_ranks": read_rank_file(args.ranks) if args.ranks else None,
        "round_ranks": args.round_ranks,
        "refine_sweeps": args.refine_sweeps,
    }
