"""DataLoaders over ht2's datasets: decoding in worker processes, undecodable images dropped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.dataloader import default_collate

from ht2.errors import HT2Error


def check_batch_size(batch_size: int) -> None:
    """HT2Error unless `batch_size` is a positive number of images."""
    if batch_size <= 0:
        raise HT2Error(
            f"batch_size must be a positive number of images, not {batch_size}",
            params="batch_size",
        )


def check_workers(workers: int) -> None:
    """HT2Error for a negative number of loader processes."""
    if workers < 0:
        raise HT2Error(
            f"workers must be 0 (load in this process) or more, not {workers}", params="workers"
        )


def collate_decoded(batch: list[Any]) -> Any:
    """Stack the samples that decoded (not None); an all-bad batch is two empty tensors."""
    kept = [sample for sample in batch if sample is not None]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return default_collate(kept)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int = 2,
    shuffle: bool = False,
    sampler: Sampler | Iterable[int] | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """Batches of (images, labels) from `dataset`, decoded by `workers` processes.

    Images that cannot be decoded are dropped from their batch (a batch can then be shorter,
    or empty). Tensors already in memory (a cached split) are served without workers. Workers
    persist across epochs; memory is pinned only when CUDA is available.
    """
    check_batch_size(batch_size)
    check_workers(workers)
    if getattr(dataset, "in_memory", False):
        workers = 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_decoded,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=workers > 0,
    )
