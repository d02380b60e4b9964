"""`ht2 report`: show the stored report of a compressed model folder again."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ht2.cli.tables import render, report_table
from ht2.errors import HT2Error

if TYPE_CHECKING:
    from ht2.surgery import CompressionReport

EXAMPLES = """examples:
  ht2 report out/r20-e0.8
  ht2 report out/r20-e0.8 --markdown >> RESULTS.md
  ht2 report out/r20-e0.8 --json | jq .mac_reduction
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="print the per-layer report of a compressed model folder",
        description="Print DIR/report.json, written by `ht2 compress`, as the same per-layer "
        "table that `ht2 compress` printed; for a folder `ht2 prune` wrote, the channels each "
        "pruned pair kept and the sizes against the unpruned model.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="folder from `ht2 compress`")
    style = parser.add_mutually_exclusive_group()
    style.add_argument(
        "--markdown", action="store_true", help="print a Markdown table (default: plain text)"
    )
    style.add_argument(
        "--json", action="store_true", help="print report.json as stored (default: a table)"
    )
    parser.set_defaults(run=run)


def read_report_data(directory: Path) -> tuple[dict[str, Any], CompressionReport]:
    """The raw JSON of DIR/report.json and the report it holds; problems name the file.

    The folder is checked first as loading it would be (without reading the tensors): a report
    of a folder that no longer loads would describe a model nobody can rebuild.
    """
    from ht2.io.artefacts import REPORT, check_folder, read_report

    check_folder(directory)  # also says when DIR is not a folder
    report = read_report(directory)
    try:
        report_table(report)  # every field must also render
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise HT2Error(f"{directory / REPORT} is not an ht2 compression report: {error}") from None
    return json.loads((directory / REPORT).read_text(encoding="utf-8")), report


def pruned_report(directory: Path) -> dict[str, Any] | None:
    """For a folder `ht2 prune` wrote (it has no report.json): what each chain kept, and the
    sizes against the unpruned model the manifest names; None for any other folder."""
    from ht2 import models
    from ht2.io.artefacts import REPORT, load, read_manifest
    from ht2.planning.pruning import pruning_summary

    if not directory.is_dir() or (directory / REPORT).exists():
        return None
    manifest = read_manifest(directory)
    if not manifest.get("pruned") or not manifest.get("arch"):
        return None
    pruned = load(directory)  # every check first: the original is built from the same arch
    arch = manifest["arch"]
    original = models.create(arch["name"], **arch.get("kwargs", {}))
    return pruning_summary(pruned, original, models.get_entry(arch["name"]).input_size)


def pruned_table(summary: dict[str, Any], markdown: bool) -> str:
    headers = ["producer", "consumer", "channels kept"]
    rows = [
        [chain["producer"], chain["consumer"], f"{chain['kept']} of {chain['channels']}"]
        for chain in summary["chains"]
    ]
    return "\n".join(
        [
            render(headers, rows, markdown),
            "",
            f"channel pruning: {summary['params_before']:,} -> {summary['params_after']:,} "
            f"parameters ({summary['param_reduction']:.2f}x fewer), {summary['macs_before']:,} "
            f"-> {summary['macs_after']:,} MACs per image ({summary['mac_reduction']:.2f}x fewer)",
        ]
    )


def run(args: argparse.Namespace) -> int:
    pruned = pruned_report(args.directory)
    if pruned is not None:
        print(json.dumps(pruned, indent=1) if args.json else pruned_table(pruned, args.markdown))
        return 0
    data, report = read_report_data(args.directory)
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        from ht2.recipes.notes import pipeline_lines

        print(
            "\n".join(
                [report_table(report, markdown=args.markdown), *pipeline_lines(report.pipeline)]
            )
        )
    return 0
