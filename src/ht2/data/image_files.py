"""An ImageFolder-style split (SPLIT/<class>/<image>) that skips images it cannot decode."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from ht2.errors import HT2Error

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

log = logging.getLogger(__name__)
_warned = False  # one warning per process; the caller reports the total


def _warn_skipped(path: str, error: Exception) -> None:
    global _warned
    if not _warned:
        _warned = True
        reason = " ".join(str(error).split())
        log.warning(
            "skipping undecodable image %s (%s); further ones are skipped quietly", path, reason
        )


def scan_split(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names (sorted sub-folders) and (path, label) samples of one split folder.

    Images are found recursively and sorted as torchvision's ImageFolder sorts them. A split
    without class folders, or a class folder without images, is an HT2Error.
    """
    classes = sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        raise HT2Error(f"{folder} holds no class folders; expected {folder}/<class>/<image>")
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        files = [
            os.path.join(parent, file)
            for parent, names in _folders_once(folder / name, outside=folder)
            for file in sorted(names)
            if file.lower().endswith(IMAGE_EXTENSIONS) and not file.startswith(".")
        ]
        if not files:
            raise HT2Error(
                f"class folder {folder / name} holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add its images"
            )
        samples.extend((path, label) for path in files)
    return classes, samples


def _folders_once(root: Path, outside: Path) -> list[tuple[str, list[str]]]:
    """(folder, file names) under `root`, sorted by folder path, following links to folders
    but entering each real folder once and never `outside` (the split, whose other classes
    a link back up would pull in): a link loop neither hangs the scan nor counts an image
    twice."""
    status = os.stat(outside)
    seen = {(status.st_dev, status.st_ino)}
    found = []
    for parent, folders, names in os.walk(root, followlinks=True):
        status = os.stat(parent)
        if (status.st_dev, status.st_ino) in seen:
            folders.clear()
            continue
        seen.add((status.st_dev, status.st_ino))
        folders.sort()  # which copy of a linked folder is kept does not depend on the disk
        found.append((parent, names))
    return sorted(found)


def load_rgb(path: str) -> Image.Image:
    """Decode one image file as RGB."""
    with Image.open(path) as image:
        return image.convert("RGB")


class ImageFiles(Dataset):
    """(transform(image), label) per file; None for a file that cannot be decoded.

    `make_loader`'s collate drops the None samples, so a bad file costs one image, not the run.
    """

    def __init__(
        self,
        classes: list[str],
        samples: list[tuple[str, int]],
        transform: Callable[[Image.Image], Any],
    ) -> None:
        self.classes = classes
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, label = self.samples[index]
        try:
            image = load_rgb(path)
        except DECODE_ERRORS as error:
            _warn_skipped(path, error)
            return None
        return self.transform(image), label

    def paths(self) -> list[str]:
        """The image files, in sample order."""
        return [path for path, _ in self.samples]
