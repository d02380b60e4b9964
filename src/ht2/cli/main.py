"""The `ht2` command: a thin layer of subcommands over the library."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from ht2 import __version__
from ht2.choices import HT2Warning, RenamedWarning
from ht2.cli import (
    benchmark,
    calibrate,
    compare_cmd,
    compress,
    evaluate,
    export_cmd,
    finetune,
    models_cmd,
    prune_cmd,
    report_cmd,
    sweep,
    train_cmd,
)
from ht2.cli.flag_names import with_flags
from ht2.cli.signals import install_interrupt_handlers, interrupted_exit_code
from ht2.cli.threads_arg import threads_of
from ht2.errors import HT2Error

SUBCOMMANDS = (
    compress,
    prune_cmd,
    evaluate,
    calibrate,
    finetune,
    train_cmd,
    sweep,
    compare_cmd,
    benchmark,
    export_cmd,
    report_cmd,
    models_cmd,
)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and a pointer to --help), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="ht2",
        description="Compress trained CNNs by hierarchical Tucker-2 (HT-2) and SVD "
        "decomposition. Run `ht2 COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"ht2 {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; bad input is a one-line error and exit code 2.

    Warnings raised while the command runs are held back and shown only if it succeeds, so
    that a refused input prints exactly one line.
    """
    install_interrupt_handlers()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return int(done.code or 0)
    with warnings.catch_warnings(record=True) as held:
        warnings.simplefilter("default")
        try:
            with threads_of(args):
                code = args.run(args)
        except HT2Error as error:
            print(f"ht2: error: {with_flags(error)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as stop:
            print(f"ht2: interrupted; {left_behind(args)}", file=sys.stderr)
            return interrupted_exit_code(stop)
        except BrokenPipeError:  # `ht2 models | head`: the reader left; not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    for item in held:
        sys.stderr.write(_shown(item))
    return code


def left_behind(args: argparse.Namespace) -> str:
    """What an interrupted command leaves: a training run's last epoch checkpoint (kept so that
    --resume goes on from it), or nothing (outputs are written whole or not at all)."""
    out = getattr(args, "out", None)
    if getattr(args, "resume", None) is not None and out is not None:
        from ht2.train.checkpoint import STATE
        from ht2.train.runner import CHECKPOINT

        checkpoint = Path(out) / CHECKPOINT / STATE
        if checkpoint.is_file():
            return (
                f"the checkpoint of the last finished epoch is in {Path(out) / CHECKPOINT}; "
                "add --resume to the same command to go on from it"
            )
    return "nothing was written"


def _shown(item: warnings.WarningMessage) -> str:
    """A held warning as printed: ht2's own as one line, others as Python shows them."""
    if issubclass(item.category, (RenamedWarning, HT2Warning)):
        return f"ht2: warning: {item.message}\n"
    return warnings.formatwarning(item.message, item.category, item.filename, item.lineno)


if __name__ == "__main__":
    sys.exit(main())
