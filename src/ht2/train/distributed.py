"""torchrun / DistributedDataParallel plumbing: who am I, talk to the others, stay quiet."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ht2.device import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one when not under torchrun)."""

    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup_world(device: str = "auto") -> World:
    """Join the process group torchrun describes in the environment (NCCL on GPU, else gloo).

    The address and port come from torchrun (--standalone or --rdzv-endpoint); nothing here
    is hard-coded. Without torchrun this is a world of one and no group is created.
    """
    chosen = resolve_device(device)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(chosen)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return World(rank, size, local_rank, chosen)


def teardown_world(world: World) -> None:
    """Leave the process group, if one was joined."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], world: World) -> list[float]:
    """Element-wise sum of `values` over every process (identity for a world of one)."""
    if not world.distributed:
        return list(values)
    device = world.device if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def main_first(world: World, work: Callable[[], T]) -> T:
    """`work()` on rank 0 first, then on the others (which then find what it cached)."""
    if not world.distributed:
        return work()
    if world.is_main:
        done = work()
        dist.barrier()
        return done
    dist.barrier()
    return work()


def weights_checksum(model: nn.Module) -> float:
    """A cheap fingerprint of the parameters, to check that every rank holds the same model."""
    with torch.no_grad():
        return float(sum(p.double().abs().sum() + p.double().sum() for p in model.parameters()))


def checksums_agree(model: nn.Module, world: World) -> tuple[bool, list[float]]:
    """Gather every rank's weights checksum; True when they are all equal."""
    mine = weights_checksum(model)
    if not world.distributed:
        return True, [mine]
    gathered: list[float] = [0.0] * world.size
    dist.all_gather_object(gathered, mine)
    return all(value == gathered[0] for value in gathered), gathered


def wrap_model(model: nn.Module, world: World) -> nn.Module:
    """DistributedDataParallel around `model` when there is more than one process."""
    if not world.distributed:
        return model
    ids = [world.device.index] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
