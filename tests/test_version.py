"""The version is written once, in ht2/__init__.py; the package metadata reads it from there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ht2 import __version__
from ht2.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_takes_the_version_from_the_package() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ht2.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_cli_prints_the_package_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ht2 {__version__}"
