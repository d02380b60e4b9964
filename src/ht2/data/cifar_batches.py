"""torchvision's CIFAR-10 python batches under a root: downloaded when online and missing."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from torchvision.datasets import CIFAR10

from ht2.errors import HT2Error

BATCH_SPLITS = ("train", "test")
DOWNLOAD_TIMEOUT_S = 30


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound each network wait, so an offline machine fails instead of hanging."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(root: Path) -> None:
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S), contextlib.redirect_stdout(sys.stderr):
            CIFAR10(str(root), train=False, download=True)
    except (OSError, RuntimeError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise HT2Error(
            f"CIFAR-10 is not in {root} and could not be downloaded ({reason}); offline, "
            "pass data DIR with an ImageFolder copy (DIR/train, DIR/test)",
            params="data",
        ) from None


def cifar10_batches(root: Path, split: str, transform: Callable[..., Any]) -> CIFAR10:
    """The train or test split of CIFAR-10 under `root`, downloading it first if needed."""
    if split not in BATCH_SPLITS:
        raise HT2Error(f"CIFAR-10 batches have the splits train and test, not '{split}'")
    if not (root / "cifar-10-batches-py").is_dir():
        _download(root)
    try:
        return CIFAR10(str(root), train=split == "train", transform=transform)
    except RuntimeError:
        _download(root)  # present but incomplete or corrupted: fetch it again
        return CIFAR10(str(root), train=split == "train", transform=transform)


def batch_files(root: Path) -> list[str]:
    """The files of the batches folder, for the tensor cache's fingerprint."""
    return sorted(str(p) for p in (root / "cifar-10-batches-py").iterdir() if p.is_file())
