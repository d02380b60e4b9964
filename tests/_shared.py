"""Paths to the real data and weights in ../shared, and a skip when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "weights"
REFERENCE_RANKS = SHARED / "docs" / "reference-ranks.json"
RESNET_WEIGHTS = {
    "cifar10_resnet20": WEIGHTS / "resnet20-12fca82f.th",
    "cifar10_resnet56": WEIGHTS / "resnet56-4bfd9763.th",
}


def shared_file(path: Path) -> Path:
    """`path` if it exists, else skip the test saying what is missing."""
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data folder is not next to this checkout)")
    return path


CIFAR10_JPEG = SHARED / "data" / "cifar10-jpeg.tar.gz"
TEST_DATA = Path.home() / ".cache" / "ht2" / "test-data"


def cifar10_jpeg_dir() -> Path:
    """The shared CIFAR-10 JPEG tree (DIR/train, DIR/test), extracted once outside the repo.

    Extracted into ~/.cache/ht2/test-data/cifar10-jpeg-<size>/ and reused by later runs;
    skips the test when the archive is absent.
    """
    from ht2.data.archive import extract_to

    archive = shared_file(CIFAR10_JPEG)
    return extract_to(archive, TEST_DATA / f"cifar10-jpeg-{archive.stat().st_size}")
