"""Keep the calling thread's alternate signal stack as it was around calls into OpenVINO.

OpenVINO's CPU plugin installs a 20 KB alternate signal stack on the thread that compiles a
model, and puts back a stack it had freed when the model is destroyed. Python runs every signal
handler on the alternate stack (SA_ONSTACK), so the next handled signal (PyTorch's SIGCHLD
handler, installed by any DataLoader with workers, runs at every child's exit) finds either a
stack too small for the AMX register state or none at all, and the process dies of SIGSEGV.
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
