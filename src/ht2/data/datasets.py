"""Evaluation and training datasets for a model: its transforms applied to the split asked for."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from ht2.data.cache import (
    CachedImages,
    cache_file,
    decode_all,
    fingerprint,
    read_cache,
    write_cache,
)
from ht2.data.cifar_batches import batch_files, cifar10_batches
from ht2.data.image_files import DECODE_ERRORS, ImageFiles, scan_split
from ht2.data.sources import BATCHES, DataSource, resolve
from ht2.data.splits import check_split, split_folder
from ht2.data.subset import SplitDataset, balanced_indices
from ht2.data.transforms import eval_transform, is_cifar, train_transform
from ht2.errors import HT2Error
from ht2.models import ModelEntry

MAX_DECODE_WORKERS = 8


@dataclass(frozen=True)
class _Split:
    """One opened split before subsetting: the dataset and what describes it."""

    source: DataSource
    base: Any
    classes: list[str]
    split: str
    location: str
    files: Callable[[], list[str]]


def _open_split(data: str, split: str | None, transform: Callable[..., Any]) -> _Split:
    source = resolve(data)
    if source.kind == BATCHES:
        name = check_split(split) if split else "test"
        base = cifar10_batches(source.root, name, transform)
        return _Split(
            source,
            base,
            list(base.classes),
            name,
            f"{source.root} (CIFAR-10 batches)",
            lambda: batch_files(source.root),
        )
    name, folder = split_folder(source.root, split)
    classes, samples = scan_split(folder)
    base = ImageFiles(classes, samples, transform)
    return _Split(source, base, classes, name, str(folder), base.paths)


def _check_sizes(opened: _Split, entry: ModelEntry, indices: list[int]) -> None:
    """CIFAR models take images as they are (no resize): refuse any other size, by file.

    Every image to be used is checked, from its header only, before any is decoded: one stray
    image would otherwise stop a run at collation. Refusing it names the file; resizing it
    quietly would feed the model one image unlike the rest. ImageNet-style transforms resize
    and crop, so any size does for them.
    """
    if not is_cifar(entry) or not isinstance(opened.base, ImageFiles):
        return
    _, want_h, want_w = entry.input_size
    first = True
    for index in indices:
        path = opened.base.samples[index][0]
        try:
            with Image.open(path) as image:
                width, height = image.size
        except DECODE_ERRORS:
            continue  # counted and skipped when it is loaded
        if (height, width) == (want_h, want_w):
            first = False
        elif first:
            raise HT2Error(
                f"images in {opened.location} are {width}x{height} but {entry.name} takes "
                f"{want_w}x{want_h} (first: {path}); give a data set at the model's resolution"
            )
        else:
            raise HT2Error(
                f"image {path} is {width}x{height} but {entry.name} takes {want_w}x{want_h} "
                f"like the other images in {opened.location}; remove it or resize it"
            )


def check_classes(dataset: Dataset, model: nn.Module, entry: ModelEntry, label: str) -> None:
    """HT2Error unless `dataset` has one class folder per class `model` predicts.

    The model's count is its build argument num_classes, else its registry entry's. `label`
    names the model in the message (a name or a folder, as the user gave it).
    """
    arch = getattr(model, "ht2_arch", None) or {}
    predicts = int((arch.get("kwargs") or {}).get("num_classes", entry.num_classes))
    found = len(dataset.classes)
    if found != predicts:
        raise HT2Error(
            f"{dataset.location} has {found} class folders but {label} predicts {predicts} "
            "classes; give a data set with its classes"
        )


def _decode_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_DECODE_WORKERS))


def eval_dataset(
    data: str,
    entry: ModelEntry,
    split: str | None = None,
    limit: int | None = None,
    cache: bool = False,
) -> Dataset:
    """The evaluation split of `data` with `entry`'s eval transform, as (image, label) pairs.

    `data` is an ImageFolder tree (DIR/test or DIR/val, ...), a .tar.gz of one, or
    cifar10[:ROOT]. `split` defaults to test, else val. `limit` keeps that many images,
    class-balanced and the same on every call. `cache` decodes the split once into a
    safetensors file under cache_root(), so later calls load it in a fraction of a second.
    CIFAR models take images unresized: one at another size is an HT2Error naming it.
    The result has .classes, .targets, .split and .location.
    """
    transform = eval_transform(entry)
    if limit is not None:
        balanced_indices([], limit)  # refuse a bad limit before any scanning
    opened = _open_split(data, split, transform.pixels if cache else transform)
    indices = balanced_indices(opened.base.targets, limit)
    if not cache:
        _check_sizes(opened, entry, indices)
        return SplitDataset(opened.base, indices, opened.classes, opened.split, opened.location)
    key = {
        "data": str(opened.source.root.resolve()),
        "kind": opened.source.kind,
        "split": opened.split,
        "transform": transform.params,
        "limit": limit,
        **fingerprint(opened.files()),
    }
    path = cache_file(key, f"{opened.source.root.resolve().name}-{opened.split}")
    cached = read_cache(path, key, transform.normalise)
    if cached is None:
        _check_sizes(opened, entry, indices)  # a cached split passed this check when decoded
        pixels_only = SplitDataset(
            opened.base, indices, opened.classes, opened.split, opened.location
        )
        pixels, labels = decode_all(pixels_only, _decode_workers(), opened.location)
        write_cache(path, key, pixels, labels)
        cached = CachedImages(pixels, labels, transform.normalise)
    everything = list(range(len(cached)))
    return SplitDataset(cached, everything, opened.classes, opened.split, opened.location)


def split_size(data: str, split: str | None = None, limit: int | None = None) -> int:
    """How many images `split` of `data` holds (at most `limit`), without decoding any."""
    if limit is not None:
        balanced_indices([], limit)
    opened = _open_split(data, split, lambda image: image)
    return len(balanced_indices(opened.base.targets, limit))


def train_dataset(
    data: str,
    entry: ModelEntry,
    augment: bool = True,
    limit: int | None = None,
) -> Dataset:
    """The train split of `data` with `entry`'s training augmentation; `limit` as in eval_dataset.

    Without `augment` the images get the evaluation transform (for calibration, say).
    """
    if limit is not None:
        balanced_indices([], limit)
    transform = train_transform(entry) if augment else eval_transform(entry)
    opened = _open_split(data, "train", transform)
    indices = balanced_indices(opened.base.targets, limit)
    _check_sizes(opened, entry, indices)
    return SplitDataset(opened.base, indices, opened.classes, opened.split, opened.location)
