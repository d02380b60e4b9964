"""`ht2 compare`: every method at the same size targets; table, JSON and Pareto plot."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ht2 import models
from ht2.cli.common import (
    add_model_source,
    add_output_folder,
    add_timing_args,
    add_workers_arg,
    compare_method_list,
    model_from_args,
)
from ht2.cli.compare_allocations import add_allocations_arg, compare_allocators
from ht2.cli.number_args import non_negative_int, positive_int
from ht2.cli.rank_args import sweep_count
from ht2.cli.threads_arg import add_threads_arg
from ht2.errors import HT2Error
from ht2.layers.registry import kxk_methods
from ht2.surgery.targets import Target, parse_factor

if TYPE_CHECKING:
    from ht2.models import ModelEntry

EXAMPLES = """examples:
  ht2 compare cifar10_resnet20 --weights resnet20.th --data ~/data/cifar10 \\
      --target-params 2,4,8 --out compare/r20
  ht2 compare cifar10_resnet20 --pretrained --data ~/data/cifar10 --target-macs 3 \\
      --methods ht2,tucker2 --eval-images 1000 --no-latency --out compare/quick
"""


def _factors(kind: str) -> Callable[[str], list[float]]:
    def parse(text: str) -> list[float]:
        values = []
        for part in (p for p in text.split(",") if p.strip()):
            try:
                values.append(Target(kind, parse_factor(part)).factor)
            except (ValueError, HT2Error) as error:
                raise argparse.ArgumentTypeError(str(error)) from None
            if not math.isfinite(values[-1]):
                raise argparse.ArgumentTypeError(f"expected finite reduction factors, got {part}")
        if not values:
            raise argparse.ArgumentTypeError("give at least one reduction factor, e.g. 2,4,8")
        return list(dict.fromkeys(values))

    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare methods at the same size targets; table and Pareto plot",
        description="For each size target and method: compress a fresh copy to the target "
        "(one global energy, bisected), measure the relative weight error, top-1 before and "
        "after BatchNorm calibration, and latency against the original (alternating runs). "
        "Writes OUT/compare.md, OUT/compare.json and OUT/pareto.png.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_source(parser)
    parser.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="data with test/ (or val/) and train/ splits, as for `ht2 evaluate`",
    )
    parser.add_argument(
        "--target-params",
        type=_factors("params"),
        default=[],
        metavar="X,Y",
        help="comma-separated parameter reduction factors, e.g. 2,4,8 (default: none)",
    )
    parser.add_argument(
        "--target-macs",
        type=_factors("macs"),
        default=[],
        metavar="X,Y",
        help="comma-separated MAC reduction factors, e.g. 2,3 (default: none)",
    )
    parser.add_argument(
        "--methods",
        type=compare_method_list,
        default=list(kxk_methods()),
        help=f"comma-separated methods among {', '.join(kxk_methods())} for kxk convs, and prune "
        "(channel pruning to the same target, the rival to decomposition); one curve each "
        f"(default: {','.join(kxk_methods())})",
    )
    parser.add_argument(
        "--eval-images",
        type=positive_int,
        help="score on this many test images, class-balanced, for quick runs (default: all)",
    )
    parser.add_argument(
        "--calib-images",
        type=non_negative_int,
        help="training images for BatchNorm calibration, more than the split holds refused; 0 "
        "skips it (default: 2048, or the whole split when smaller)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=256, help="batch size (default: 256)"
    )
    add_workers_arg(parser)
    parser.add_argument("--no-latency", action="store_true", help="skip timing (default: time)")
    add_timing_args(parser)
    add_threads_arg(parser, default=1)
    parser.add_argument(
        "--no-keep-if-larger",
        dest="keep_if_larger",
        action="store_false",
        help="factorize even layers that do not shrink (default: keep them dense)",
    )
    parser.add_argument(
        "--refine-sweeps",
        type=sweep_count,
        default=0,
        metavar="N",
        help="rounds of ALS (HT-2) or HOOI (Tucker-2) after the one-pass factors, lowering "
        "the weight error at the same size (default: 0, the paper's factors)",
    )
    add_allocations_arg(parser)
    add_output_folder(parser)
    parser.add_argument("--json", action="store_true", help="print compare.json to stdout")
    parser.set_defaults(run=run)


def _targets(args: argparse.Namespace) -> list[Target]:
    targets = [Target("params", f) for f in args.target_params]
    targets += [Target("macs", f) for f in args.target_macs]
    if not targets:
        raise HT2Error("give --target-params and/or --target-macs, e.g. --target-params 2,4,8")
    return targets


def _calibrator(args: argparse.Namespace, entry: ModelEntry, progress: bool):
    """BatchNorm calibration for each row (None with --calib-images 0)."""
    if args.calib_images == 0:
        return None
    from ht2.train.calibration import train_image_calibrator

    return train_image_calibrator(
        args.data, entry, args.calib_images, args.batch_size, args.workers, progress
    )


def run(args: argparse.Namespace) -> int:
    from ht2.experiments.compare import (
        CompareResult,
        compare_markdown,
        fresh_copies,
        run_compare,
        write_compare,
    )
    from ht2.experiments.scoring import top1_scorer
    from ht2.io import check_output_dir

    check_output_dir(args.out, overwrite=args.force)
    targets = _targets(args)
    entry = models.get_entry(args.model)
    progress = not args.json
    calibrate = _calibrator(args, entry, progress)  # a missing split fails here, before work
    allocations = compare_allocators(args, entry)
    score = top1_scorer(args.data, entry, args.eval_images, args.batch_size, args.workers, progress)
    original = model_from_args(args)  # built once: every row starts from the same weights
    base, rows = run_compare(
        fresh_copies(original),
        entry.input_size,
        targets,
        args.methods,
        score,
        calibrate,
        [] if args.no_latency else args.batch_sizes,
        args.repeats,
        allocations=allocations,
        keep_if_larger=args.keep_if_larger,
        progress=progress,
        refine_sweeps=args.refine_sweeps,
    )
    settings = {
        "weights": args.weights or ("pretrained" if args.pretrained else "random-init"),
        "data": args.data,
        "eval_images": args.eval_images or "all",
        "calib_images": args.calib_images,
        "threads": args.threads,
        "repeats": None if args.no_latency else args.repeats,
        "keep_if_larger": args.keep_if_larger,
        "refine_sweeps": args.refine_sweeps,
    }
    result = CompareResult(entry.name, base, rows, settings)
    write_compare(result, args.out, overwrite=args.force)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(compare_markdown(result))
        print(f"wrote {args.out}/ (compare.md, compare.json, pareto.png)", file=sys.stderr)
    return 0
