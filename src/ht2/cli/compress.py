"""`ht2 compress`: decompose a model at one energy and write a compressed model folder."""

from __future__ import annotations

import argparse
import json
import sys

from ht2 import models
from ht2.choices import METHODS
from ht2.cli.allocate_args import (
    add_allocate_args,
    allocate_from_args,
    check_allocate_args,
    write_allocation_plot,
)
from ht2.cli.calibrate import calibrate_on_train_images
from ht2.cli.common import (
    add_model_source,
    add_output_folder,
    example_input,
    model_from_args,
)
from ht2.cli.data_aware_args import (
    add_data_aware_args,
    calib_image_count,
    check_data_aware,
    data_aware_or_plain,
)
from ht2.cli.latency_args import add_latency_args, apply_latency_aware, check_latency_args
from ht2.cli.number_args import positive_int
from ht2.cli.rank_args import add_rank_args, rank_options
from ht2.cli.tables import report_table
from ht2.errors import HT2Error

EXAMPLES = """examples:
  ht2 compress cifar10_resnet20 --weights resnet20.th --energy 0.8 --out out/r20-e0.8
  ht2 compress vgg16_bn --random-init --energy 0.9 --exclude 'classifier.*' --out out/vgg
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="compress a model by HT-2 (or a rival decomposition) at an energy level",
        description="Replace the first conv and 1x1 convs by SVD (Tucker-1), other kxk convs by "
        "--method (HT-2 by default) and Linear layers by SVD, ranks chosen by the energy rule; "
        "write DIR/model.safetensors, DIR/ht2.json and DIR/report.json.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_source(parser)
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="ht2",
        help="decomposition of kxk convs: ht2, tucker2 (Kim et al.), cp (Lebedev et al.) or svd "
        "(spatial SVD: a Dx1 then a 1xD conv); first and 1x1 convs always get SVD (Tucker-1) "
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
    add_latency_args(parser)
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="re-estimate BatchNorm statistics on training images right after compressing "
        "(needs --data; default: off)",
    )
    parser.add_argument(
        "--data", metavar="PATH", help="data folder with train/, for --calibrate (default: none)"
    )
    parser.add_argument(
        "--calib-images",
        type=positive_int,
        default=None,
        help="training images for --calibrate (default: 2048), --data-aware (default: 512) or "
        "--allocate sensitivity (default: 256)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print report.json to stdout instead of the table"
    )
    add_data_aware_args(parser)
    add_allocate_args(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ht2.io import atomic_directory, check_output_dir
    from ht2.io.artefacts import write_model
    from ht2.surgery import compress

    check_output_dir(args.out, overwrite=args.force)
    if args.calibrate and not args.data:
        raise HT2Error("--calibrate needs --data PATH (a folder with train/)")
    check_latency_args(args)
    check_data_aware(args)
    ranking = rank_options(args)
    check_allocate_args(args, ranking["target"])
    model = model_from_args(args)
    allocation, ranking = allocate_from_args(args, model, ranking)
    report = data_aware_or_plain(args, compress)(
        model,
        energy=args.energy,
        method=args.method,
        include=args.include,
        exclude=args.exclude,
        example_input=example_input(args.model),
        keep_if_larger=args.keep_if_larger,
        progress=not args.json,
        **ranking,
    )
    allocation.annotate(report)
    if args.calibrate:
        entry = models.get_entry(args.model)
        calibrate_on_train_images(model, entry, args.data, calib_image_count(args), 256, workers=2)
    apply_latency_aware(args, model, report, example_input(args.model))
    with atomic_directory(args.out, overwrite=args.force) as staging:
        write_model(model, staging, report)
        write_allocation_plot(args, staging, report)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report_table(report))
        print(f"wrote {args.out}/ (model.safetensors, ht2.json, report.json)", file=sys.stderr)
    if not (args.calibrate or args.data_aware):
        print(recovery_hint(args.out), file=sys.stderr)
    return 0


def recovery_hint(out: object) -> str:
    """What a model fresh from the decomposition is worth, and the commands that recover it."""
    return (
        "note: these factors have had no recovery yet, so top-1 may be far below the "
        f"original's (measure it: ht2 evaluate {out} --data DATA). Recover it with "
        f"`ht2 calibrate {out} --data DATA --evaluate --out {out}-cal` (BatchNorm statistics, "
        f"no training, a minute) or `ht2 finetune {out} --data DATA --epochs 5 --out {out}-ft`."
    )
