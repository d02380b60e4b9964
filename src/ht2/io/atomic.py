"""All-or-nothing output folders: build under a temporary name, rename at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ht2.errors import HT2Error


def check_output_dir(directory: Path, overwrite: bool) -> None:
    """Refuse a path that is a file, or a non-empty folder unless `overwrite`."""
    if directory.exists() and not directory.is_dir():
        raise HT2Error(f"output {directory} exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise HT2Error(
            f"output folder {directory} exists and is not empty; use --force to replace it"
        )


@contextmanager
def atomic_directory(directory: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside `directory`; on success it replaces `directory` whole.

    On any error or interrupt the staging folder is removed and `directory` is untouched.
    """
    check_output_dir(directory, overwrite)
    parent = directory.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=parent))
    try:
        yield staging
        if directory.exists():
            retired = Path(
                tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=parent)
            )
            os.replace(directory, retired / "old")
            os.replace(staging, directory)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
