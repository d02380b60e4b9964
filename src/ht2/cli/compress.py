"""`ht2 compress`: decompose a model at one energy and write a compressed model folder."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ht2.choices import method_names
from ht2.cli.allocate_args import add_allocate_args, allocate_choices, write_allocation_plot
from ht2.cli.common import (
    add_model_source,
    add_output_folder,
    example_input,
    model_from_args,
)
from ht2.cli.data_aware_args import add_data_aware_args, data_aware_choices
from ht2.cli.latency_args import (
    add_latency_args,
    check_latency_args,
    form_timing,
    print_forms,
    rounding_of,
)
from ht2.cli.number_args import positive_int
from ht2.cli.rank_args import add_rank_args, rank_options
from ht2.cli.tables import report_table
from ht2.cli.threads_arg import add_threads_arg
from ht2.errors import HT2Error
from ht2.recipes.recipe import RECIPES, Recipe, default_recipe, get_recipe

if TYPE_CHECKING:
    from ht2.surgery.plan_model import Plan

EXAMPLES = """examples:
  ht2 compress cifar10_resnet20 --pretrained --target-params 4x --data DATA --out out/r20-4x
  ht2 compress cifar10_resnet20 --pretrained --target-params 4x --recipe paper --out out/r20-p
  ht2 compress cifar10_resnet20 --weights resnet20.th --energy 0.8 --out out/r20-e0.8
  ht2 compress vgg16_bn --random-init --energy 0.9 --exclude 'classifier.*' --out out/vgg
  ht2 compress cifar10_resnet20 --pretrained --target-params 4x --plan-only --out plan.json
  ht2 compress cifar10_resnet20 --pretrained --plan plan.json --out out/r20-edited
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="compress a model by HT-2 (or a rival decomposition) at an energy level or a size",
        description="Replace the first conv and 1x1 convs by SVD (Tucker-1), other kxk convs by "
        "--method (HT-2 by default) and Linear layers by SVD, by a --recipe: the paper's "
        "policy, or with training images and a size target the steps that measured best; "
        "write DIR/model.safetensors, DIR/ht2.json and DIR/report.json.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_source(parser)
    parser.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        help="the steps from the trained model to the compressed one: paper (the paper's "
        "policy: one energy for every layer, one-pass factors, no data) or best (sensitivity "
        "allocation, 10 ALS sweeps, least-squares refit to the original outputs on training "
        "images, BatchNorm re-estimation kept only if held-out images say so; needs --data and "
        "--target-params/--target-macs); the flags below override its choices (default: best "
        "with --data and a target, else paper)",
    )
    parser.add_argument(
        "--method",
        choices=method_names(),
        default="ht2",
        help="decomposition of kxk convs: ht2, tucker2 (Kim et al.), cp (Lebedev et al.) or "
        "spatial-svd (a Dx1 then a 1xD conv); first and 1x1 convs always get SVD (Tucker-1) "
        "and Linear layers SVD (default: ht2)",
    )
    add_rank_args(parser)
    parser.add_argument(
        "--no-keep-if-larger",
        dest="keep_if_larger",
        action="store_false",
        help="factorize every chosen layer even when its factors are not smaller "
        "(reproduces the reference's ranks and sizes; default: keep such layers "
        "dense)",
    )
    parser.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="compress only layers whose name matches (repeatable; default: all)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        metavar="GLOB",
        help="leave layers whose name matches dense (repeatable; default: none)",
    )
    add_output_folder(parser)
    add_threads_arg(parser)
    add_latency_args(parser)
    parser.add_argument(
        "--calibrate",
        action="store_true",
        default=None,
        help="re-estimate BatchNorm statistics on training images right after compressing "
        "plain factors (needs --data; default: off)",
    )
    parser.add_argument(
        "--data",
        metavar="PATH",
        help="data folder with train/: training images for --recipe best, --allocate "
        "sensitivity, --data-aware and --calibrate (default: none)",
    )
    parser.add_argument(
        "--calib-images",
        type=positive_int,
        default=None,
        help="training images for each step that reads them: --allocate sensitivity "
        "(default: 256), --data-aware (default: 512), --calibrate (default: 2048)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print report.json to stdout instead of the table"
    )
    plans = parser.add_mutually_exclusive_group()
    plans.add_argument(
        "--plan-only",
        action="store_true",
        help="decide every layer's method and ranks (running the recipe's allocation), write "
        "that plan as JSON to --out (a file) and change nothing; edit it and apply it with "
        "--plan (default: off)",
    )
    plans.add_argument(
        "--plan",
        metavar="FILE",
        help="apply this plan exactly instead of deciding: a --plan-only file, or a folder "
        "written by `ht2 compress` (or its ht2.json) to replay its layers on these weights; "
        "not with --target-*, --ranks or --allocate (default: none)",
    )
    add_data_aware_args(parser)
    add_allocate_args(parser)
    parser.set_defaults(run=run)


def recipe_from_args(args: argparse.Namespace, has_target: bool) -> Recipe:
    """The recipe asked for (or the default one) with every flag the user gave laid over it;
    one-line errors for what cannot run, before the model is built."""
    name = args.recipe or default_recipe(bool(args.data), has_target)
    recipe = get_recipe(name).with_choices(
        refine_sweeps=args.refine_sweeps,
        calibrate=args.calibrate,
        **allocate_choices(args),
        **data_aware_choices(args),
    )
    recipe = recipe.with_images(args.calib_images)
    recipe.check(has_target, bool(args.data))
    return recipe


def run(args: argparse.Namespace) -> int:
    from ht2.io import atomic_directory, check_output_dir
    from ht2.io.artefacts import write_model
    from ht2.recipes.notes import pipeline_lines
    from ht2.recipes.pipeline import compress_with_recipe

    if args.plan_only:
        return write_plan_only(args)
    check_output_dir(args.out, overwrite=args.force)
    check_latency_args(args)
    options = {**rank_options(args), "round_ranks": rounding_of(args)}
    target = options.pop("target")
    options.pop("refine_sweeps")  # the recipe carries it
    plan = read_given_plan(args, target, options)
    recipe = recipe_from_args(
        args, target is not None or plan is not None or args.target_speedup is not None
    )
    model = model_from_args(args)
    report = compress_with_recipe(
        model, recipe, target=target, plan=plan, **recipe_settings(args), **options
    )
    print_forms(report)
    with atomic_directory(args.out, overwrite=args.force) as staging:
        write_model(model, staging, report)
        write_allocation_plot(args, staging, report)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print("\n".join([report_table(report), *pipeline_lines(report.pipeline)]))
        print(f"wrote {args.out}/ (model.safetensors, ht2.json, report.json)", file=sys.stderr)
    if not (recipe.calibrate or report.data_aware):
        print(recovery_hint(args.out), file=sys.stderr)
    return 0


def recipe_settings(args: argparse.Namespace) -> dict:
    """The keyword arguments compress_with_recipe and plan_with_recipe both take from flags."""
    return {
        "data": args.data,
        "energy": args.energy,
        "method": args.method,
        "example_input": example_input(args.model),
        "include": args.include,
        "exclude": args.exclude,
        "keep_if_larger": args.keep_if_larger,
        "progress": not args.json,
        "forms": form_timing(args),
        "speedup": args.target_speedup,
        "min_energy": args.min_energy,
    }


def read_given_plan(args: argparse.Namespace, target: object, options: dict) -> Plan | None:
    """The Plan of --plan (None without it), refusing the flags that would decide again."""
    if not args.plan:
        return None
    from ht2.io.plan_file import read_plan

    deciding = [
        flag
        for flag, given in (
            ("--target-params/--target-macs", target is not None),
            ("--ranks", bool(options.get("layer_ranks"))),
            ("--rank-rule vbmf", options.get("rank_rule") != "energy"),
            ("--allocate", getattr(args, "allocate", None) not in (None, "uniform")),
            ("--refine-sweeps", args.refine_sweeps is not None),
            ("--round-ranks", args.round_ranks != 1),
            ("--include/--exclude", bool(args.include or args.exclude)),
        )
        if given
    ]
    if deciding:
        raise HT2Error(
            f"--plan gives every layer's method, ranks and sweeps; drop {', '.join(deciding)}"
        )
    return read_plan(args.plan)


def write_plan_only(args: argparse.Namespace) -> int:
    """--plan-only: the recipe's deciding steps, the plan written to --out as JSON."""
    from ht2.io.plan_file import write_plan
    from ht2.recipes.pipeline import plan_with_recipe

    if args.plan:
        raise HT2Error("--plan-only writes a plan; do not also give --plan")
    check_latency_args(args)
    options = {**rank_options(args), "round_ranks": rounding_of(args)}
    target = options.pop("target")
    options.pop("refine_sweeps")
    recipe = recipe_from_args(args, target is not None or args.target_speedup is not None)
    model = model_from_args(args)
    plan = plan_with_recipe(model, recipe, target=target, **recipe_settings(args), **options)
    write_plan(plan, args.out, overwrite=args.force)
    if args.json:
        print(plan.to_json(), end="")
    else:
        print(plan_table(plan))
        print(
            f"wrote {args.out} (apply it: ht2 compress ... --plan {args.out} --out DIR)",
            file=sys.stderr,
        )
    return 0


def plan_table(plan: Plan) -> str:
    """One line per planned layer: name, method, ranks, energy, fit."""
    lines = [
        f"plan for {plan.model}: {len(plan.layers)} layer(s) to factorize, "
        f"{len(plan.dense)} left dense"
    ]
    for layer in plan.layers:
        ranks = " ".join(f"{key}={value}" for key, value in layer.ranks.items())
        energy = f"{layer.energy:.4g}" if layer.energy is not None else "-"
        lines.append(f"  {layer.name:32s} {layer.method:12s} {ranks:24s} e={energy} {layer.fit}")
    return "\n".join(lines)


def recovery_hint(out: object) -> str:
    """What a model fresh from the decomposition is worth, and the commands that recover it."""
    return (
        "note: these factors have had no recovery yet, so top-1 may be far below the "
        f"original's (measure it: ht2 evaluate {out} --data DATA). Recover it with "
        f"`ht2 calibrate {out} --data DATA --evaluate --out {out}-cal` (BatchNorm statistics, "
        f"no training, a minute) or `ht2 finetune {out} --data DATA --epochs 5 --out {out}-ft`."
    )
