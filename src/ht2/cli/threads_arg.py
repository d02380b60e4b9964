"""--threads: one flag, one wording and one place that applies it, for every computing command.

Kept free of torch at parse time, like the rest of argument parsing.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from ht2.cli.number_args import positive_int


def add_threads_arg(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """--threads N on `parser`; main() runs the whole command with that many CPU threads."""
    shown = "PyTorch's choice" if default is None else str(default)
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=default,
        metavar="N",
        help="CPU threads for the whole command (PyTorch's, and ONNX Runtime's or OpenVINO's "
        "where they run); small layers are decomposed and fitted on one, which is faster "
        f"when another process is busy (default: {shown})",
    )


@contextmanager
def threads_of(args: argparse.Namespace) -> Iterator[None]:
    """Run the block with the command's --threads (as set before when absent or not given)."""
    threads = getattr(args, "threads", None)
    if threads is None:
        yield
        return
    from ht2.metrics.latency import num_threads

    with num_threads(threads):
        yield
