"""benchmarks/paths.py: a result's recorded command names no absolute path (also after `=`),
leaves relative paths and plain values as given, and drops the flags it is told to."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests._shared import load_benchmark


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_benchmark("paths", monkeypatch)


def test_absolute_paths_are_recorded_portably_in_every_form(paths: ModuleType) -> None:
    beside = paths.ROOT.parent / "shared" / "data.tar.gz"  # as ../shared lies beside the repo
    home = Path.home() / "w.th"
    argv = ["--data", str(beside), f"--weights={home}", "--rows=a/*", "out/rel", "3"]
    line = paths.command_line("python benchmarks/x.py", argv)
    assert line == (
        "python benchmarks/x.py --data ../shared/data.tar.gz --weights=~/w.th --rows=a/* out/rel 3"
    )


def test_dropped_flags_leave_with_their_values(paths: ModuleType) -> None:
    drop = {"--rows": 1, "--again": 0}
    argv = ["--rows", "a/*,b/*", "--threads", "1", "--again", "--rows=c/*", "--repeats", "3"]
    assert paths.command_line("ht2", argv, drop) == "ht2 --threads 1 --repeats 3"
    assert paths.command_line("ht2", [], drop) == "ht2"
