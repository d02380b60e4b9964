"""SIGTERM and SIGHUP stop a command the way Ctrl-C does, so its temporary folders are removed.

By default Python dies on SIGTERM (kill, a batch scheduler, torchrun stopping its workers) and
SIGHUP (a closed terminal) without unwinding, which leaves half-written staging folders behind.
Raising KeyboardInterrupt instead runs every `finally` and context manager on the way out.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNAL_NAMES = ("SIGTERM", "SIGHUP")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install_interrupt_handlers() -> None:
    """Make SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread.

    Only signals still at their default action are taken: one ignored on purpose (`nohup`
    ignores SIGHUP) stays ignored, and a handler someone else installed is kept. Called from
    another thread, this does nothing (Python delivers signals to the main thread only).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for name in SIGNAL_NAMES:
        signum = getattr(signal, name, None)  # Windows has no SIGHUP
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _interrupt)


def interrupted_exit_code(stop: KeyboardInterrupt) -> int:
    """128 + the signal number, as shells report a process stopped by that signal (130 for
    Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""
    name = stop.args[0] if stop.args and stop.args[0] in SIGNAL_NAMES else "SIGINT"
    return 128 + int(getattr(signal, name, signal.SIGINT))
