"""Paths to the real data and weights in ../shared, and a skip when they are absent."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

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


# Conv geometries for the full-rank equivalence grids: kernel, stride, padding, dilation.
CONV_GEOMETRIES = [
    ((3, 3), 1, 1, 1),
    ((3, 3), 2, 1, 1),
    ((3, 5), (2, 1), (1, 2), 1),
    ((5, 3), (1, 2), (2, 0), (2, 1)),
    ((2, 4), 1, "same", (1, 2)),
    ((3, 3), 1, "valid", 1),
    ((1, 3), (1, 2), (0, 1), 1),
    ((3, 3), (3, 2), 2, (2, 3)),
]
PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]

CIFAR10_JPEG = SHARED / "data" / "cifar10-jpeg.tar.gz"
# Lasting across test sessions (extracting 60,000 JPEGs takes a while), apart from ht2's own
# cache, which every session points at a folder of its own (conftest.py).
TEST_DATA = Path.home() / ".cache" / "ht2-test-data"


def cifar10_jpeg_dir() -> Path:
    """The shared CIFAR-10 JPEG tree (DIR/train, DIR/test), extracted once outside the repo.

    Extracted into ~/.cache/ht2-test-data/cifar10-jpeg-<size>/ and reused by later runs;
    skips the test when the archive is absent.
    """
    from ht2.data.archive import extract_to

    archive = shared_file(CIFAR10_JPEG)
    return extract_to(archive, TEST_DATA / f"cifar10-jpeg-{archive.stat().st_size}")


def write_image_tree(
    root: Path,
    splits: tuple[str, ...] = ("train", "test"),
    classes: tuple[str, ...] = ("a", "b", "c"),
    per_class: int = 4,
    size: tuple[int, int] = (32, 32),
    suffix: str = ".png",
) -> Path:
    """A tiny ImageFolder tree of random RGB images: root/<split>/<class>/<NNN><suffix>.

    `size` is (width, height); the images are the same on every call.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    width, height = size
    for split in splits:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:03d}{suffix}")
    return root


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||, in float64 (the measure every exactness test uses)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return float(torch.linalg.norm(actual - expected) / torch.linalg.norm(expected))


def grid_conv(geometry: tuple, mode: str, bias: bool) -> nn.Conv2d:
    """A 6 -> 7 channel Conv2d of one CONV_GEOMETRIES geometry and padding mode, its bias
    (when it has one) drawn from a normal distribution so that it matters."""
    kernel, stride, padding, dilation = geometry
    conv = nn.Conv2d(6, 7, kernel, stride, padding, dilation, padding_mode=mode, bias=bias)
    if bias:
        nn.init.normal_(conv.bias)
    return conv


def load_benchmark(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh copy of benchmarks/`name`.py, registered in sys.modules while the test runs (its
    dataclasses look their module up), with benchmarks/ on the path as when it is run."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    monkeypatch.syspath_prepend(str(script.parent))
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module
