"""Fixtures every test file shares: a fixed random state, a private cache, the CLI runner."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from ht2.data.paths import CACHE_ENV

CliRunner = Callable[[list[str]], tuple[int, str, str]]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker gets its share of the cores, so that the workers'
    PyTorch thread pools do not fight over them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """ht2's cache ($HT2_CACHE_DIR) is a folder of this session, never the user's ~/.cache/ht2.

    Subprocesses the tests start inherit it. A test that needs a cache of its own still sets
    the variable itself; the real CIFAR-10 images have a lasting folder (tests/_shared.py).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("ht2-cache")))
        yield


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """Runs `ht2 ARGS` in this process: cli(args) -> (exit code, stdout, stderr)."""
    from ht2.cli.main import main

    def run(args: list[str]) -> tuple[int, str, str]:
        code = main(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """Eight random images per class of three classes, in train/ and test/ (a file may
    override it with data of its own)."""
    from tests._shared import write_image_tree

    return write_image_tree(tmp_path / "data", classes=("a", "b", "c"), per_class=8)


@pytest.fixture
def compressed(tmp_path: Path) -> Path:
    """A three-class CIFAR ResNet-20 (random init) compressed at e=0.7, saved as a folder."""
    import ht2

    model = ht2.models.create("cifar10_resnet20", num_classes=3)
    report = ht2.compress(model, energy=0.7, example_input=torch.zeros(1, 3, 32, 32))
    return ht2.save(model, tmp_path / "compressed", report)
