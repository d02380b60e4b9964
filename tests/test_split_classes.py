"""Training refuses splits whose class folders differ (label k would name two classes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests._shared import write_image_tree


@pytest.mark.parametrize("memory", ["--in-memory", "--no-in-memory"])
def test_train_refuses_train_and_test_with_other_classes(tmp_path: Path, cli, memory: str) -> None:
    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=1)
    shutil.move(data / "test" / "j", data / "test" / "z")
    out = tmp_path / "run"
    code, _, err = cli(
        [
            "train",
            "cifar10_resnet20",
            "--data",
            str(data),
            "--epochs",
            "1",
            "--max-steps",
            "1",
            "--workers",
            "0",
            memory,
            "--out",
            str(out),
        ]
    )
    assert code == 2, err
    assert "different classes" in err and "j, z" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
