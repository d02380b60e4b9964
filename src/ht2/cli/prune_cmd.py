"""`ht2 prune`: channel pruning to a size, the rival users weigh decomposition against."""

from __future__ import annotations

import argparse
import json
import sys

from ht2.cli.common import add_model_source, add_output_folder, example_input, model_from_args
from ht2.cli.rank_args import reduction_factor
from ht2.cli.threads_arg import add_threads_arg

EXAMPLES = """examples:
  ht2 prune cifar10_resnet20 --pretrained --target-params 3.8 --out out/r20-pruned
  ht2 finetune out/r20-pruned --data ~/data/cifar10 --epochs 10 --out out/r20-pruned-ft
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune",
        help="prune channels to a size (the rival to decomposition), for a like-for-like table",
        description="Remove the filters with the smallest L1 norms from every conv whose "
        "outputs reach only one other conv (through BatchNorm and activations), the same "
        "share everywhere, topped up channel by channel, until the model is --target-params (or "
        "--target-macs) times smaller; channels tied to a residual addition, a concatenation or "
        "a Linear layer are kept. Writes DIR/model.safetensors and DIR/ht2.json, which "
        "`ht2 finetune`, `evaluate`, `benchmark`, `export` and `report` read.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_source(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--target-params",
        type=reduction_factor,
        metavar="X",
        help="make the model at least X times smaller in parameters, such as 4 or 4x",
    )
    target.add_argument(
        "--target-macs",
        type=reduction_factor,
        metavar="X",
        help="make the model at least X times smaller in multiply-accumulates per image",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the pruning as JSON (default: a summary)"
    )
    add_output_folder(parser)
    add_threads_arg(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ht2.io import atomic_directory, check_output_dir
    from ht2.io.artefacts import write_model
    from ht2.planning.pruning import prune

    check_output_dir(args.out, overwrite=args.force)
    model = model_from_args(args)
    kind = "params" if args.target_params else "macs"
    plan = prune(model, args.target_params or args.target_macs, example_input(args.model), kind)
    with atomic_directory(args.out, overwrite=args.force) as staging:
        write_model(model, staging, None)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=1))
    else:
        print(
            f"pruned {plan.chains} conv pairs to {plan.keep_fraction:.1%} of their inner channels "
            f"(smallest L1 norms out): {plan.params_before:,} -> {plan.params_after:,} "
            f"parameters ({plan.param_reduction:.2f}x fewer), {plan.macs_before:,} -> "
            f"{plan.macs_after:,} MACs per image ({plan.mac_reduction:.2f}x fewer)"
        )
        print(f"wrote {args.out}/ (model.safetensors, ht2.json)", file=sys.stderr)
    print(
        f"note: pruned channels are gone, and so is the accuracy they carried; recover it with "
        f"`ht2 finetune {args.out} --data DATA --epochs 10 --out {args.out}-ft`",
        file=sys.stderr,
    )
    return 0
