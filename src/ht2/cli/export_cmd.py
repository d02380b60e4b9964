"""`ht2 export`: a compressed model for inference, BatchNorms folded, as safetensors or ONNX."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ht2 import models
from ht2.choices import DEFAULT_OPSET, ONNX_DTYPES, ORT_CPU_DTYPES
from ht2.cli.common import add_output_folder
from ht2.cli.number_args import positive_int
from ht2.cli.threads_arg import add_threads_arg
from ht2.errors import HT2Error
from ht2.io.model_source import is_model_dir

if TYPE_CHECKING:
    import torch

ONNX_FILE = "model.onnx"
ONNX_CHECK = "onnx_check.json"

EXAMPLES = """examples:
  ht2 export out/r20 --fold-bn --out out/r20-folded
  ht2 export out/r20 --fold-bn --format onnx --out out/r20-onnx
  ht2 export out/r20 --fold-bn --format onnx --dtype float16 --out out/r20-onnx-fp16
  ht2 benchmark out/r20 --against cifar10_resnet20 --onnx out/r20-onnx/model.onnx --threads 1

A folded model is for inference only: its BatchNorms are gone (nn.Identity), their scale and
shift live in the conv before each one. safetensors output loads again with ht2.load(DIR).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a compressed model folder for inference (BatchNorm folding, ONNX)",
        description="Read a folder written by `ht2 compress`; with --fold-bn fold every "
        "BatchNorm2d that directly follows a conv into it (the last 1x1 conv of a factorized "
        "layer), checked against the unfolded model; write a model folder (safetensors, "
        "loadable by ht2.load) or DIR/model.onnx checked by onnx.checker and ONNX Runtime.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR", help="a compressed model folder (holds ht2.json)")
    add_output_folder(parser)
    parser.add_argument(
        "--fold-bn",
        action="store_true",
        help="fold BatchNorms into the convs before them (default: off)",
    )
    parser.add_argument(
        "--format",
        choices=("safetensors", "onnx"),
        default="safetensors",
        help="safetensors: a model folder as `ht2 compress` writes; onnx: DIR/model.onnx and "
        f"DIR/{ONNX_CHECK} (default: safetensors)",
    )
    parser.add_argument(
        "--opset",
        type=positive_int,
        default=DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX opset version (default: {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--dtype",
        choices=ONNX_DTYPES,
        help="with --format onnx: the graph's weights and activations, checked against PyTorch "
        f"in the same dtype; ONNX Runtime's CPU provider runs {' and '.join(ORT_CPU_DTYPES)} "
        "(default: float32)",
    )
    add_threads_arg(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON (default: text)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ht2.export import fold_batchnorms, require_onnx
    from ht2.export.onnx_export import supported_opsets
    from ht2.io import atomic_directory, check_output_dir, load, save_verified
    from ht2.io.artefacts import read_report

    if not is_model_dir(args.dir):
        raise HT2Error(f"{args.dir} is not a folder written by `ht2 compress` (no ht2.json)")
    check_dtype(args)
    check_output_dir(args.out, overwrite=args.force)
    if args.format == "onnx":
        require_onnx()
        low, high = supported_opsets()
        if not low <= args.opset <= high:
            raise HT2Error(f"--opset must be between {low} and {high} here, got {args.opset}")
    model = load(args.dir)
    input_size = models.get_entry(model.ht2_arch["name"]).input_size
    summary: dict[str, Any] = {"source": str(args.dir), "out": str(args.out), "format": args.format}
    if args.format == "onnx":
        summary["dtype"] = args.dtype or "float32"
    if args.fold_bn:
        model, report = fold_batchnorms(model, input_size)
        summary["fold_bn"] = report.to_dict()
    if args.format == "onnx":
        with atomic_directory(args.out, overwrite=args.force) as staging:
            summary["onnx"] = write_onnx(
                model, input_size, staging, args.opset, summary, summary["dtype"]
            )
    else:
        report = read_report(args.dir, required=False)
        save_verified(model, args.out, input_size, report, overwrite=args.force)
    print_summary(summary, args.json)
    return 0


def check_dtype(args: argparse.Namespace) -> None:
    """--dtype only with --format onnx, and only a dtype ONNX Runtime's CPU provider runs."""
    if args.dtype is None:
        return
    if args.format != "onnx":
        raise HT2Error(
            f"--dtype {args.dtype} applies to --format onnx; safetensors keeps the model's weights"
        )
    if args.dtype not in ORT_CPU_DTYPES:
        raise HT2Error(
            f"--dtype {args.dtype}: ONNX Runtime's CPU provider runs only "
            f"{' and '.join(ORT_CPU_DTYPES)} graphs (it has no {args.dtype} Conv kernel); "
            "nothing written"
        )


def write_onnx(
    model: torch.nn.Module,
    input_size: tuple[int, ...],
    staging: Path,
    opset: int,
    summary: dict[str, Any],
    dtype: str = "float32",
) -> dict[str, Any]:
    """DIR/model.onnx in `dtype`, checked by onnx.checker and against PyTorch (in the same
    dtype) in ONNX Runtime; the check (and the fold summary) also go to DIR/onnx_check.json."""
    from ht2.export import check_onnx, export_onnx
    from ht2.io.artefacts import write_json

    export_onnx(model, input_size, staging / ONNX_FILE, opset, dtype)
    check = check_onnx(model, staging / ONNX_FILE, input_size, opset, dtype=dtype)
    result = {"file": ONNX_FILE, "input_size": list(input_size), **check.to_dict()}
    write_json(staging / ONNX_CHECK, {**summary, "onnx": result})
    return result


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    """What was folded (and why not), what was written, and the ONNX agreement."""
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    fold = summary.get("fold_bn")
    if fold is not None:
        total = len(fold["folded"]) + len(fold["refused"])
        print(
            f"folded {len(fold['folded'])} of {total} BatchNorm2d; max |diff| against the "
            f"unfolded model {fold['max_abs_diff']:.3g} "
            f"(largest output {fold['max_abs_output']:.3g})"
        )
        for name, reason in fold["refused"].items():
            print(f"  not folded: {name}: {reason}")
    onnx = summary.get("onnx")
    if onnx is not None:
        print(
            f"ONNX Runtime vs PyTorch, both in {onnx['dtype']}, at batch sizes "
            f"{', '.join(map(str, onnx['batch_sizes']))}: max abs diff {onnx['max_abs_diff']:.3g} "
            f"(relative {onnx['relative_diff']:.3g}, tolerance {onnx['tolerance']:g} for "
            f"{onnx['dtype']}); onnx {onnx['onnx_version']}, onnxruntime "
            f"{onnx['onnxruntime_version']}, opset {onnx['opset']}"
        )
    files = ", ".join(sorted(path.name for path in Path(summary["out"]).iterdir()))
    print(f"wrote {summary['out']}/ ({files})", file=sys.stderr)
