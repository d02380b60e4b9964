"""Where a run's batches come from: a decoded split in memory, or image files decoded each epoch.

A CIFAR-style training split that fits in IN_MEMORY_LIMIT_BYTES as uint8 (CIFAR-10: 150 MB)
is decoded once (cached for later runs) and kept on the training device with the evaluation
split; batches are augmented there (ht2.train.batches). Anything else (ImageNet-style random
resized crops, a larger split) or --no-in-memory decodes the files in loader processes.
Both paths augment image `index` of `epoch` under image_seed(seed, epoch, index), each in its
own way, so either one resumes bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch.utils.data import DistributedSampler

from ht2.errors import HT2Error
from ht2.models import ModelEntry
from ht2.train.config import TrainConfig
from ht2.train.distributed import World, main_first
from ht2.train.seeding import EpochSampler, SeededImages


@dataclass
class RunInputs:
    """A run's training and evaluation batches, and what they hold."""

    train: Iterable[tuple[torch.Tensor, torch.Tensor]]
    evaluation: Iterable[tuple[torch.Tensor, torch.Tensor]]
    sampler: EpochSampler
    train_images: int
    eval_images: int
    in_memory: bool
    nbytes: int = 0  # of the decoded training split, when in memory

    def describe(self, workers: int) -> str:
        """How the images reach the model, for the line printed before training."""
        if self.in_memory:
            return (
                f"training split decoded in memory ({self.nbytes / 2**20:.0f} MiB), augmented in "
                "batches (--no-in-memory decodes the files every epoch)"
            )
        return f"images decoded every epoch by {workers} loader process(es) per process"


def choose_in_memory(
    wanted: bool | None, data: str, entry: ModelEntry, limit: int | None = None
) -> bool:
    """--in-memory (True), --no-in-memory (False) or, by default (None), whether the decoded
    training split fits in IN_MEMORY_LIMIT_BYTES. Only CIFAR-style models can have it."""
    from ht2.data.decoded import IN_MEMORY_LIMIT_BYTES, augments_in_batches, decoded_bytes

    if wanted is False:
        return False
    if not augments_in_batches(entry):
        if wanted:
            raise HT2Error(
                f"in_memory=True augments native-size images in batches (CIFAR-style "
                f"models); {entry.name} trains on random resized crops of the image files: "
                "drop in_memory=True",
                params="in_memory=True",
            )
        return False
    return bool(wanted) or decoded_bytes(data, entry, "train", limit) <= IN_MEMORY_LIMIT_BYTES


def build_inputs(
    data: str, entry: ModelEntry, config: TrainConfig, world: World, batch: int
) -> RunInputs:
    """The batches of this process: its shard of each epoch's order, in `batch`es."""
    if choose_in_memory(config.in_memory, data, entry, config.train_limit):
        return _in_memory(data, entry, config, world, batch)
    return _from_files(data, entry, config, world, batch)


def check_same_classes(train: object, evaluation: object) -> None:
    """HT2Error when the training and evaluation splits name different classes: label k would
    mean one class in training and another in every accuracy figure."""
    ours, theirs = list(train.classes), list(evaluation.classes)
    if ours == theirs:
        return
    missing = sorted(set(ours) ^ set(theirs))
    detail = (
        f"classes only in one: {', '.join(missing[:5])}"
        if missing
        else "the same, in another order"
    )
    raise HT2Error(
        f"the training split ({train.split}) and the evaluation split ({evaluation.split}) have "
        f"different classes ({len(ours)} and {len(theirs)}; {detail}); give splits with the "
        "same class folders"
    )


def _epoch_sampler(size: int, config: TrainConfig, world: World) -> EpochSampler:
    return EpochSampler(
        DistributedSampler(
            range(size), num_replicas=world.size, rank=world.rank, shuffle=True, seed=config.seed
        )
    )


def _drop_last(size: int, world: World, batch: int) -> bool:
    return size // world.size >= 2 * batch


def _in_memory(
    data: str, entry: ModelEntry, config: TrainConfig, world: World, batch: int
) -> RunInputs:
    from ht2.data.decoded import decoded_split  # torchvision, lazily
    from ht2.train.batches import MemoryBatches

    train_split = main_first(world, lambda: decoded_split(data, entry, "train", config.train_limit))
    eval_split = main_first(world, lambda: decoded_split(data, entry, None, config.eval_limit))
    check_same_classes(train_split, eval_split)
    sampler = _epoch_sampler(len(train_split), config, world)
    train = MemoryBatches(
        train_split.to(world.device),
        sampler,
        batch,
        drop_last=_drop_last(len(train_split), world, batch),
        seed=config.seed,
    )
    shard = [(0, index) for index in range(world.rank, len(eval_split), world.size)]
    evaluation = MemoryBatches(eval_split.to(world.device), shard, batch)
    return RunInputs(
        train, evaluation, sampler, len(train_split), len(eval_split), True, train_split.nbytes
    )


def _from_files(
    data: str, entry: ModelEntry, config: TrainConfig, world: World, batch: int
) -> RunInputs:
    from ht2.data import eval_dataset, make_loader, train_dataset  # torchvision, lazily

    train_set = train_dataset(data, entry, augment=True, limit=config.train_limit)
    eval_set = eval_dataset(data, entry, limit=config.eval_limit)
    check_same_classes(train_set, eval_set)
    sampler = _epoch_sampler(len(train_set), config, world)
    train = make_loader(
        SeededImages(train_set, config.seed),
        batch,
        config.workers,
        sampler=sampler,
        drop_last=_drop_last(len(train_set), world, batch),
    )
    # The loader draws its workers' base seed when it starts them: from a generator of its own,
    # not from the global one, whose draws would then depend on when the workers started.
    train.generator = torch.Generator().manual_seed(config.seed)
    shard = list(range(world.rank, len(eval_set), world.size))
    evaluation = make_loader(eval_set, batch, config.workers, sampler=shard)
    return RunInputs(train, evaluation, sampler, len(train_set), len(eval_set), False)
