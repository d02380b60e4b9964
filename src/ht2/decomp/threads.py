"""CPU threads chosen per operation size, so that decompositions survive a busy machine.

A small factorization (an eigen-solve, a QR, a few ALS sweeps on one layer) is thousands of
short parallel regions; when another process holds a core, every region waits for a thread the
scheduler has put aside, and two threads run 10 to 40 times slower than one. Such work runs on
one thread; operations on large matrices keep the threads set (torch.set_num_threads, or the
CLI's --threads), where they pay for themselves.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import torch

LARGE_NUMEL = 1 << 23  # elements (32 MiB of float32) from which an operation keeps the threads

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextmanager
def threads_for(numel: int) -> Iterator[None]:
    """Run the block on one intra-op thread when it works on fewer than LARGE_NUMEL elements,
    else on the threads set; never more than those (nested blocks only lower the count)."""
    before = torch.get_num_threads()
    if numel >= LARGE_NUMEL or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sized_by_first(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """`function` run under threads_for(the number of elements of its first argument)."""
    first = next(iter(inspect.signature(function).parameters))

    @functools.wraps(function)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        tensor = args[0] if args else kwargs[first]
        with threads_for(tensor.numel()):
            return function(*args, **kwargs)

    return run
