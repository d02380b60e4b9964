"""Published weights (torchvision's, timm's) from torch hub's or Hugging Face's cache, checked.

Every load checks the cached file against the hash its publisher gave before reading it, and
reads it without running code (safetensors, or torch.load with weights_only=True); a file that
fails is refused with one line naming it. The published hashes:

- torch hub (torchvision, timm's URL weights): the sha256 prefix in the file name,
  `name-<hex>.pth`, as torch.hub names downloads. Unlike torch.hub we only take 8 or more hex
  digits just before the extension as a hash, so `vit.h.14-300e.pth.tar` publishes none (such a
  file is still read without running code).
- Hugging Face hub (timm's default source): the sha256 (git sha1 for small files) that names the
  blob the cached file links to: the hub's ETag for that file, recorded at download.

A hash prefix catches corrupt, truncated and swapped files; it cannot stop someone who can
rewrite the cache from forging a match, which is why the reading never runs code either.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch

from ht2.errors import HT2Error
from ht2.models.weights import read_cached_state_dict

HUB_HASH = re.compile(r"-([0-9a-f]{8,64})\.[^-/]+$")
HF_HASHES = {64: "sha256", 40: "sha1"}  # blob name length: LFS files by sha256, git blobs by sha1
_CHUNK = 1 << 20


def download_failed(what: str) -> HT2Error:
    """The one message for published weights that could not be fetched."""
    return HT2Error(
        f"could not download {what} (offline?): pass weights=FILE or weights=None",
        params=("weights=FILE", "weights=None"),
    )


def published_prefix(filename: str) -> str | None:
    """The sha256 prefix a torch hub file name publishes (`resnet18-f37072fd.pth`), if any."""
    match = HUB_HASH.search(filename)
    return match.group(1) if match else None


def _digest(path: Path, algorithm: str, header: bytes = b"") -> str:
    digest = hashlib.new(algorithm, header)
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    except OSError as error:
        raise HT2Error(f"cached weights {path} cannot be read ({error.strerror})") from None
    return digest.hexdigest()


def _matches_prefix(path: Path) -> bool:
    prefix = published_prefix(path.name)
    return prefix is None or _digest(path, "sha256").startswith(prefix)


def hub_state_dict(url: str, what: str) -> dict[str, torch.Tensor]:
    """The state dict published at `url`, kept in torch hub's checkpoints folder.

    A file already there is hash-checked on every call; a missing one is downloaded, checked
    before it is moved into place, then read. `what` names the weights in error messages.
    """
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if not path.exists():
        _download(url, path, what)
    elif not _matches_prefix(path):
        raise HT2Error(
            f"cached weights {path} do not match the sha256 prefix {published_prefix(path.name)} "
            "in their name (corrupt or replaced); delete the file to download it again"
        )
    return read_cached_state_dict(path)


def resolves(url: str) -> bool:
    """Whether the host of `url` has an address: without one (offline, no DNS) a download
    would only retry for half a minute before failing, so it fails at once instead."""
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        return False
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        return False
    return True


def _download(url: str, path: Path, what: str) -> None:
    if not resolves(url):
        raise download_failed(what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError:
        raise download_failed(what) from None
    os.close(handle)
    try:
        torch.hub.download_url_to_file(url, staging)
        if not _matches_prefix(Path(staging)):
            raise HT2Error(
                f"the download of {url} does not match the sha256 prefix in its name; "
                "try again later, or pass weights=FILE",
                params="weights=FILE",
            )
        os.replace(staging, path)
    except (URLError, OSError):
        raise download_failed(what) from None
    finally:
        Path(staging).unlink(missing_ok=True)


def hf_state_dict(repo: str, filenames: Sequence[str], what: str) -> dict[str, torch.Tensor]:
    """The first of `filenames` in Hugging Face repo `repo` ('owner/name[@revision]').

    huggingface_hub fetches it, or finds it in its cache (offline too, with HF_HUB_OFFLINE=1);
    the file is then checked against the blob hash it links to, on every call.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo_id, _, revision = repo.partition("@")
    cached_only = not resolves(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    for filename in filenames:
        try:
            pointer = Path(
                hf_hub_download(
                    repo_id, filename, revision=revision or None, local_files_only=cached_only
                )
            )
        except EntryNotFoundError:  # not in the repository or, offline, not in the cache
            continue
        except OSError:  # network errors, a missing repository
            raise download_failed(what) from None
        check_hf_blob(pointer)
        return read_cached_state_dict(pointer)
    raise download_failed(what)


def check_hf_blob(pointer: Path) -> None:
    """HT2Error unless the cached file `pointer` links to a blob whose content has its name."""
    if not pointer.is_symlink():
        raise HT2Error(
            f"cached weights {pointer} cannot be checked against their published hash (not a "
            "link to a blob of the Hugging Face cache); delete it to download it again"
        )
    blob = Path(os.path.normpath(pointer.parent / os.readlink(pointer)))  # one link, not all
    expected = blob.name
    algorithm = HF_HASHES.get(len(expected))
    if algorithm is None or not re.fullmatch(r"[0-9a-f]+", expected):
        raise HT2Error(
            f"cached weights {pointer} link to {blob}, which is not named by a hash; delete "
            "both to download the weights again"
        )
    header = f"blob {blob.stat().st_size}\0".encode() if algorithm == "sha1" else b""
    if _digest(blob, algorithm, header) != expected:
        raise HT2Error(
            f"cached weights {pointer} do not match the {algorithm} {expected} published for "
            f"them (corrupt or replaced); delete {blob} and {pointer} to download them again"
        )
