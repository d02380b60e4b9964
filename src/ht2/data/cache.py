"""A decoded split kept as uint8 pixels in one safetensors file, so it is decoded only once.

The file lives in cache_root()/tensors, named by a hash of what produced it (data path,
split, pixel transform, limit, and the files' count, size and newest mtime), so a changed
folder or transform gets a new file. Pixels are stored before normalisation and normalised
on read, with the same code as the uncached path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset
from tqdm import tqdm

from ht2.data.loader import make_loader
from ht2.data.paths import cache_root
from ht2.data.transforms import Normalise
from ht2.errors import HT2Error

CACHE_FORMAT = 1
DECODE_BATCH = 256

log = logging.getLogger(__name__)


class CachedImages(Dataset):
    """(normalise(pixels[i]), label[i]) from uint8 pixels held in memory."""

    in_memory = True

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, normalise: Normalise) -> None:
        self.pixels = pixels
        self.labels = labels
        self.targets = labels.tolist()
        self.normalise = normalise

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.normalise(self.pixels[index]), self.targets[index]


def fingerprint(files: list[str]) -> dict[str, int]:
    """Count, total size and newest modification time of `files`: changes when they do."""
    size = newest = 0
    for file in files:
        status = os.stat(file)
        size += status.st_size
        newest = max(newest, status.st_mtime_ns)
    return {"files": len(files), "bytes": size, "mtime_ns": newest}


def _canonical(key: dict[str, Any]) -> str:
    return json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True)


def cache_file(key: dict[str, Any], label: str) -> Path:
    """Where the split described by `key` is cached; `label` makes the name readable."""
    digest = hashlib.sha256(_canonical(key).encode()).hexdigest()[:16]
    return cache_root() / "tensors" / f"{label}-{digest}.safetensors"


def read_cache(path: Path, key: dict[str, Any], normalise: Normalise) -> CachedImages | None:
    """The cached split at `path` if it is there, readable and made for `key`; else None."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as stored:
            if (stored.metadata() or {}).get("key") != _canonical(key):
                return None
            pixels, labels = stored.get_tensor("pixels"), stored.get_tensor("labels")
    except (SafetensorError, OSError, KeyError):
        return None
    return CachedImages(pixels, labels, normalise)


def write_cache(
    path: Path, key: dict[str, Any], pixels: torch.Tensor, labels: torch.Tensor
) -> None:
    """Write the cache file atomically: a temporary file beside it, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(
            {"pixels": pixels.contiguous(), "labels": labels.contiguous()},
            staging,
            metadata={"key": _canonical(key)},
        )
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def decode_all(dataset: Dataset, workers: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All (uint8 pixels, label) pairs of `dataset`, decoded by `workers` processes.

    Batches are copied into one preallocated tensor, so memory peaks at the split's size.
    Undecodable images are left out and counted in one warning; none decoded is an HT2Error.
    """
    total = len(dataset)
    pixels: torch.Tensor | None = None
    labels = torch.empty(total, dtype=torch.int64)
    decoded = 0
    loader = make_loader(dataset, DECODE_BATCH, workers=workers)
    with tqdm(total=total, desc="decoding once for the cache", unit="img", disable=None) as bar:
        for batch_pixels, batch_labels in loader:
            bar.update(min(DECODE_BATCH, total - bar.n))
            if not len(batch_labels):
                continue
            if pixels is None:
                pixels = torch.empty((total, *batch_pixels.shape[1:]), dtype=batch_pixels.dtype)
            end = decoded + len(batch_labels)
            pixels[decoded:end] = batch_pixels
            labels[decoded:end] = batch_labels
            decoded = end
    if pixels is None:
        raise HT2Error(f"no image in {where} could be decoded")
    if decoded < total:
        log.warning("skipped %d undecodable image(s) of %d in %s", total - decoded, total, where)
    return pixels[:decoded], labels[:decoded]
