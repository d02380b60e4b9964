"""Keep the calling thread's alternate signal stack as it was around calls into OpenVINO.

OpenVINO's CPU plugin replaces the alternate signal stack of the thread that compiles a model
with a 20,144-byte one of its own, and swaps stacks again for further models. Python runs every
signal handler on the alternate stack (SA_ONSTACK); after OpenVINO had run, processes died of
SIGSEGV with si_code SI_KERNEL (the kernel could not build a signal frame) as the next SIGCHLD
came in (PyTorch's DataLoader installs a SIGCHLD handler; with AMX in use a frame takes about
12 KB here). Putting the thread's own stack back removes the condition.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class _StackT(ctypes.Structure):
    """Linux's stack_t."""

    _fields_ = [
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    ]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def current_signal_stack() -> tuple[int | None, int, int] | None:
    """The calling thread's alternate signal stack (address, flags, size); None off Linux."""
    if _LIBC is None:
        return None
    found = _StackT()
    if _LIBC.sigaltstack(None, ctypes.byref(found)) != 0:
        return None
    return found.ss_sp, found.ss_flags, found.ss_size


def _set_signal_stack(stack: tuple[int | None, int, int]) -> None:
    if _LIBC is None:
        return
    sp, flags, size = stack
    wanted = _StackT(sp, flags & ~1, size)  # SS_ONSTACK (1) is reported, never set
    _LIBC.sigaltstack(ctypes.byref(wanted), None)


@contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Run the block, then give the calling thread back the alternate signal stack it had."""
    before = current_signal_stack()
    try:
        yield
    finally:
        if before is not None and current_signal_stack() != before:
            _set_signal_stack(before)
