"""Paths as the result JSON records them: relative to the repository, or under ~, never absolute,
so results read the same on every machine."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
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


def command_line(program: str, argv: Sequence[str], drop: Mapping[str, int] | None = None) -> str:
    """`program` then `argv` as one line for a result's "command": every absolute path made
    portable, `--flag=/path` included, and each flag in `drop` left out with the number of values
    it takes (`{"--rows": 1}`), for flags that only pick what one of several runs measures."""
    drop = drop or {}
    parts = [program]
    skip = 0
    for arg in argv:
        flag, equals, value = arg.partition("=")
        if skip:
            skip -= 1
        elif flag in drop:
            skip = 0 if equals else drop[flag]
        elif equals and flag.startswith("-"):
            parts.append(f"{flag}={portable(value)}")
        else:
            parts.append(portable(arg))
    return " ".join(parts)


def write_text(path: Path, text: str) -> Path:
    """`text` written to `path` under a temporary name beside it, then renamed: never half a
    file, even with several writers (the temporary is removed when the write fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """`data` as indented JSON, written as `write_text` writes."""
    return write_text(path, json.dumps(data, indent=1) + "\n")
