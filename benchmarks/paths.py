"""Paths as the result JSON records them: relative to the repository, or under ~, never absolute,
so results read the same on every machine."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def portable(path: str | os.PathLike[str]) -> str:
    """`path` relative to the repository when it lies beside it (../shared/...), as ~/... when it
    lies under the home folder, else relative to the repository however far up; a relative
    path is returned as given."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    absolute = Path(text).resolve()
    if absolute.is_relative_to(ROOT.parent):
        return os.path.relpath(absolute, ROOT)
    home = Path.home().resolve()
    if absolute.is_relative_to(home):
        return "~/" + absolute.relative_to(home).as_posix()
    return os.path.relpath(absolute, ROOT)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """`data` written to `path` under a temporary name beside it, then renamed: never half a
    file (the temporary is removed when the write fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(json.dumps(data, indent=1) + "\n")
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path
