"""All-or-nothing output folders: build under a temporary name, rename at the end.

The temporary folder `.NAME.HOST.PID.TOKEN.tmp` sits beside the output, so the final rename
stays on one file system. That rename never replaces a folder that another process wrote in the
meantime (renameat2 on Linux, a lock on the parent folder elsewhere), and temporary folders that
dead processes of this host left behind are removed at the next write beside them.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ht2.errors import BAD_JSON, HT2Error

RENAME_NOREPLACE = 1  # renameat2 flags, from <linux/fs.h>
RENAME_EXCHANGE = 2
_AT_FDCWD = -100

# The files that mark a folder as ht2's: a model folder, a training run, a run's checkpoint.
# (Named here rather than imported: io does not import train.)
MANIFEST_FILE = "ht2.json"
RUN_LOG_FILE = "log.jsonl"
CHECKPOINT_FOLDER = "checkpoint"
CHECKPOINT_STATE_FILE = "state.json"

Identity = tuple[int, int]


def _read_json(path: Path, first_line_only: bool = False) -> Any:
    """The JSON in `path` (or its first line); None when absent or not JSON."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.loads(handle.readline() if first_line_only else handle.read())
    except (OSError, *BAD_JSON):
        return None


def _is_checkpoint(folder: Path) -> bool:
    state = _read_json(folder / CHECKPOINT_STATE_FILE)
    return isinstance(state, dict) and isinstance(state.get("meta"), dict)


def written_by_ht2(folder: Path) -> bool:
    """True for a folder ht2 wrote: a model (an ht2 manifest), a training run (its log of
    epochs and top-1) or a run's checkpoint. Files that merely share those names do not count."""
    manifest = _read_json(folder / MANIFEST_FILE)
    if isinstance(manifest, dict) and manifest.get("format") == "ht2":
        return True
    first = _read_json(folder / RUN_LOG_FILE, first_line_only=True)
    if isinstance(first, dict) and {"epoch", "top1"} <= first.keys():
        return True
    return _is_checkpoint(folder) or _is_checkpoint(folder / CHECKPOINT_FOLDER)


def _refuse_special_folder(directory: Path, target: Path) -> None:
    """HT2Error when `target` (resolved) is the root, the home folder or holds the cwd."""
    if target == Path(target.anchor):
        raise HT2Error(
            f"refusing to replace {directory}: it is the root folder; choose another directory",
            params="directory",
        )
    try:
        home = Path.home().resolve()
    except (KeyError, RuntimeError):  # no home folder known
        home = None
    if target == home:
        raise HT2Error(
            f"refusing to replace {directory}: it is the home folder; choose another directory",
            params="directory",
        )
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the current folder was deleted: nothing to protect
        return
    if target == cwd:
        raise HT2Error(
            f"refusing to replace {directory}: it is the current folder; choose another directory",
            params="directory",
        )
    if target in cwd.parents:
        raise HT2Error(
            f"refusing to replace {directory}: it holds the current folder {cwd}; "
            "choose another directory",
            params="directory",
        )


def _refuse_file_above(directory: Path) -> None:
    """HT2Error when the nearest existing folder above `directory` is in fact a file."""
    for above in directory.absolute().parents:
        if os.path.lexists(above):
            if not above.is_dir():
                raise HT2Error(f"output {directory} cannot be made: {above} is not a folder")
            return


def check_output_dir(directory: Path, overwrite: bool) -> None:
    """Refuse what an output folder must not replace, each with a one-line HT2Error.

    Refused: a file; the root, home or current folder or one holding it; a non-empty folder
    without `overwrite`; with `overwrite`, a non-empty folder that ht2 did not write.
    """
    directory = Path(directory)
    if not directory.exists():
        _refuse_file_above(directory)
        return
    if not directory.is_dir():
        raise HT2Error(f"output {directory} exists and is not a folder")
    _refuse_special_folder(directory, directory.resolve())
    if not any(directory.iterdir()):
        return
    if not overwrite:
        raise HT2Error(
            f"output folder {directory} exists and is not empty; use overwrite=True to replace it",
            params="overwrite=True",
        )
    if not written_by_ht2(directory):
        raise HT2Error(
            f"output folder {directory} was not written by ht2 (no {MANIFEST_FILE}, "
            f"{RUN_LOG_FILE} or {CHECKPOINT_FOLDER}/); overwrite=True replaces only ht2's "
            "folders: empty it yourself or choose another directory",
            params=("overwrite=True", "directory"),
        )


def _host_tag() -> str:
    """Six hex digits naming this machine, so a PID is only judged on the host that owns it."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _staging_name(name: str) -> str:
    return f".{name}.{_host_tag()}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists here (one of another user counts as alive)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(parent: Path, name: str) -> None:
    """Remove `parent/.NAME.HOST.PID.*.tmp` folders whose writer on this host has died.

    Only that exact pattern, only in `parent`: a crash or SIGKILL can leave a half-written
    output there (hundreds of MB of checkpoint), and nobody else will ever clean it.
    """
    pattern = re.compile(rf"\.{re.escape(name)}\.([0-9a-f]{{6}})\.(\d+)\.[0-9a-f]{{8}}\.tmp")
    host = _host_tag()
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if (
            match
            and match[1] == host
            and entry.is_dir(follow_symlinks=False)
            and not _pid_alive(int(match[2]))
        ):
            shutil.rmtree(entry.path, ignore_errors=True)


def _made(folder: Path) -> bool:
    """Make `folder` with the umask's mode; False when that name is taken."""
    try:
        folder.mkdir(mode=0o777)
    except FileExistsError:
        return False
    return True


def follow_umask(staging: Path) -> None:
    """Give what is under `staging` the modes the umask gives new files and folders.

    The umask is read off `staging` itself (made with 0o777): writers that create files 0600
    whatever the umask (safetensors does) would otherwise make outputs others cannot read.
    """
    folder_mode = stat.S_IMODE(staging.stat().st_mode)
    for path in staging.rglob("*"):
        if path.is_symlink():
            continue
        current = stat.S_IMODE(path.stat().st_mode)
        wanted = folder_mode if path.is_dir() else folder_mode & (0o666 | current & 0o111)
        if current != wanted:
            path.chmod(wanted)


@contextmanager
def staging_directory(parent: Path, name: str) -> Iterator[Path]:
    """A new empty folder `parent/.NAME.HOST.PID.TOKEN.tmp`, removed on exit whatever happens.

    It is made with the umask's mode, like any folder the user makes (mkdtemp would make it
    0700, and the rename would carry that to the output). Stale ones are cleaned first.
    """
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(parent, name)
        staging = parent / _staging_name(name)
        while not _made(staging):
            staging = parent / _staging_name(name)
    except OSError as error:
        raise HT2Error(f"cannot write {parent / name}: {error.strerror}") from None
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@functools.cache
def _libc_renameat2() -> Callable[..., int] | None:
    """libc's renameat2, or None where there is none (not Linux, or an old C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """renameat2(source, target, flags): True when done, False when the system or the file
    system does not offer it; any other failure is the OSError (FileExistsError, ...)."""
    function = _libc_renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code), str(source), None, str(target))


def _identity(path: Path) -> Identity | None:
    """(device, inode) of `path`, None when nothing is there."""
    try:
        status = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


class _Conflict(Exception):
    """Another process wrote the output folder while this one was building it."""


def _is_unchanged(old: Path, seen: Identity | None, must_be_empty: bool) -> bool:
    """Whether `old` is the folder seen at the start (and still empty, if it had to be)."""
    return _identity(old) == seen and not (must_be_empty and any(old.iterdir()))


def _give_back(staging: Path, target: Path) -> None:
    """Undo an exchange that took another process's folder: swap again, or, if `target` has
    gone meanwhile, move it back there."""
    try:
        _renameat2(staging, target, RENAME_EXCHANGE)
    except FileNotFoundError:
        _renameat2(staging, target, RENAME_NOREPLACE)


def _install_by_renameat2(
    staging: Path, target: Path, seen: Identity | None, must_be_empty: bool
) -> bool:
    """Put `staging` at `target` atomically; False when renameat2 is not available here."""
    if seen is not None:
        try:
            if not _renameat2(staging, target, RENAME_EXCHANGE):
                return False
        except FileNotFoundError:  # the old folder is gone: nothing left to replace
            pass
        else:
            if _is_unchanged(staging, seen, must_be_empty):
                return True  # `staging` now holds the old folder; its removal is the caller's
            _give_back(staging, target)
            raise _Conflict
    try:
        return _renameat2(staging, target, RENAME_NOREPLACE)
    except FileExistsError:
        raise _Conflict from None


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` among ht2 processes (flock; none where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows, where a rename never replaces an existing folder anyway
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _install_under_lock(
    staging: Path, target: Path, seen: Identity | None, must_be_empty: bool
) -> None:
    """The fallback: check and rename while holding a lock on the parent folder."""
    parent = target.parent
    with _locked(parent), staging_directory(parent, target.name) as retired:
        current = _identity(target)
        if current is not None and not _is_unchanged(target, seen, must_be_empty):
            raise _Conflict
        if current is not None:
            os.rename(target, retired / "old")
        os.rename(staging, target)


def _install(staging: Path, target: Path, seen: Identity | None, must_be_empty: bool) -> None:
    """Rename `staging` to `target`, replacing only the folder seen there at the start."""
    if not _install_by_renameat2(staging, target, seen, must_be_empty):
        _install_under_lock(staging, target, seen, must_be_empty)


@contextmanager
def atomic_directory(directory: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside `directory`; on success it replaces `directory` whole.

    On any error or interrupt the staging folder is removed and `directory` is untouched. If
    another process wrote `directory` meanwhile, it is kept and this raises HT2Error: of two
    runs writing the same folder at once, exactly one succeeds.
    """
    directory = Path(directory)
    check_output_dir(directory, overwrite)
    target = directory.resolve()
    seen = _identity(target)
    with staging_directory(target.parent, target.name) as staging:
        yield staging
        follow_umask(staging)
        try:
            _install(staging, target, seen, must_be_empty=not overwrite)
        except _Conflict:
            if overwrite:
                raise HT2Error(
                    f"output folder {directory} was written by another process while this one "
                    "ran; it was kept and this result dropped: rerun to replace it"
                ) from None
            raise HT2Error(
                f"output folder {directory} exists (another process wrote it while this one "
                "ran); use overwrite=True to replace it",
                params="overwrite=True",
            ) from None
