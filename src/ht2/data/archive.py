"""A .tar.gz of an ImageFolder tree, extracted once into the cache and reused after."""

from __future__ import annotations

import lzma
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from ht2.data.paths import cache_root
from ht2.errors import HT2Error

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_CHUNK = 1 << 20


def is_archive(path: Path) -> bool:
    """True when `path` is named like a tar archive this package extracts."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_members(tar: tarfile.TarFile, archive: Path) -> None:
    """Refuse members that would land outside the target or are not plain files and folders."""
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise HT2Error(f"{archive} holds an unsafe member '{member.name}'; not extracting it")


def extract_to(archive: Path, target: Path) -> Path:
    """Extract `archive` into `target` unless it is already there; all or nothing.

    Extraction goes to a temporary folder beside `target` that is renamed into place, so an
    interrupted run or a concurrent one never leaves a half-extracted `target`. Any tar is
    accepted whatever its name says (plain, gzip, bzip2, xz); anything else, or a corrupt or
    truncated one, is an HT2Error naming the file.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        _extract_checked(archive, staging)
        os.replace(staging, target)
    except OSError:
        if not target.is_dir():  # not a concurrent extraction that finished first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _extract_checked(archive: Path, staging: Path) -> None:
    """Extract every member into `staging`, then read the stream to its end.

    tarfile stops quietly at a damaged header, and gzip checks its CRC only at the end of the
    stream: reading to the end turns a corrupt archive into an error, not half a data set.
    """
    try:
        tar = tarfile.open(archive)
    except tarfile.TarError:
        raise HT2Error(
            f"cannot extract {archive}: it is not a tar archive (plain, gzip, bzip2 or xz); "
            "check the file, or download it again"
        ) from None
    try:
        with tar:
            _check_members(tar, archive)
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, **safe)
            while tar.fileobj.read(_CHUNK):
                pass
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
        if isinstance(error, OSError) and error.errno is not None:
            # The file system's word: a full disk, permissions, or members that clash (a file
            # where another member needs a folder).
            member = os.path.relpath(error.filename, staging) if error.filename else "?"
            raise HT2Error(
                f"cannot extract {archive} into {staging.parent}: {error.strerror} at '{member}'"
            ) from None
        reason = " ".join(str(error).split()) or type(error).__name__
        raise HT2Error(
            f"cannot extract {archive}: it is corrupt or truncated ({reason}); download it again"
        ) from None


def extract_once(archive: Path) -> Path:
    """The extracted copy of `archive` in the cache, keyed by its file name and size."""
    size = archive.stat().st_size
    return extract_to(archive, cache_root() / "extracted" / f"{_stem(archive)}-{size}")
