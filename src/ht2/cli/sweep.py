"""`ht2 sweep`: compress at several energies, evaluate and time each, draw the Pareto plot."""

from __future__ import annotations

import argparse
import json
import sys

from ht2 import models
from ht2.cli.common import (
    add_model_source,
    add_output_folder,
    add_timing_args,
    add_workers_arg,
    energy_value,
    method_list,
    model_from_args,
)
from ht2.cli.number_args import positive_int
from ht2.cli.threads_arg import add_threads_arg
from ht2.layers.registry import kxk_methods

EXAMPLES = """examples:
  ht2 sweep cifar10_resnet20 --weights resnet20.th --data ~/data/cifar10 --out sweeps/r20
  ht2 sweep cifar10_resnet56 --weights resnet56.th --data ~/data/cifar10 \\
      --energies 0.9,0.7,0.5 --methods ht2,svd --out sweeps/r56
"""


def _energies(text: str) -> list[float]:
    values = [energy_value(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one energy, e.g. 0.9,0.7")
    return values


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="compress at several energies; table and Pareto plot",
        description="`ht2 compare` at fixed energies instead of size targets, without "
        "BatchNorm calibration: for each method and energy compress a copy of the original "
        "(every row from the same weights), measure top-1 on the eval split, and time it "
        "against the original at each batch size (alternating runs). Writes OUT/sweep.json, "
        "OUT/sweep.md and OUT/pareto.png.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_source(parser)
    parser.add_argument(
        "--energies",
        type=_energies,
        default=[0.9, 0.8, 0.7, 0.6, 0.5],
        help="comma-separated energies (default: 0.9,0.8,0.7,0.6,0.5)",
    )
    parser.add_argument(
        "--methods",
        type=method_list,
        default=["ht2"],
        help=f"comma-separated methods among {', '.join(kxk_methods())} for kxk convs (first, "
        "1x1 convs and Linear layers always get SVD); one curve each (default: ht2)",
    )
    parser.add_argument(
        "--data",
        metavar="PATH",
        help="eval data as for `ht2 evaluate`; without it accuracy is skipped (default: none)",
    )
    parser.add_argument(
        "--limit", type=positive_int, help="evaluate on this many images (default: all)"
    )
    add_workers_arg(parser)
    add_timing_args(parser)
    add_threads_arg(parser)
    parser.add_argument(
        "--no-keep-if-larger",
        dest="keep_if_larger",
        action="store_false",
        help="factorize even layers that do not shrink (default: keep them dense)",
    )
    add_output_folder(parser)
    parser.add_argument("--json", action="store_true", help="print sweep.json to stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ht2.experiments import plot_pareto, sweep, sweep_markdown
    from ht2.experiments.compare import fresh_copies
    from ht2.experiments.scoring import top1_scorer
    from ht2.io import atomic_directory, check_output_dir

    check_output_dir(args.out, overwrite=args.force)
    entry = models.get_entry(args.model)
    score = None
    if args.data:
        score = top1_scorer(args.data, entry, args.limit, workers=args.workers, progress=False)
    original = model_from_args(args)  # built once: every row starts from the same weights
    base, rows = sweep(
        fresh_copies(original),
        entry.input_size,
        args.energies,
        args.methods,
        score,
        args.batch_sizes,
        args.repeats,
        args.keep_if_larger,
        progress=not args.json,
    )
    result = {
        "model": entry.name,
        "weights": args.weights or ("pretrained" if args.pretrained else None),
        "data": args.data,
        "limit": args.limit,
        "original": base,
        "rows": [row.to_dict() for row in rows],
    }
    with atomic_directory(args.out, overwrite=args.force) as staging:
        (staging / "sweep.json").write_text(json.dumps(result, indent=1) + "\n")
        (staging / "sweep.md").write_text(sweep_markdown(entry.name, base, rows))
        plot_pareto(rows, staging / "pareto.png", entry.name)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(sweep_markdown(entry.name, base, rows))
        print(f"wrote {args.out}/ (sweep.json, sweep.md, pareto.png)", file=sys.stderr)
    return 0
