"""How many fine-tuning epochs fit in a time budget, from a few training steps timed here.

The steps run on a copy of the model (its weights stay as they are), with the run's own inputs
(the decoded in-memory split or the image files), precision (bfloat16 autocast where the run
uses it), memory format, batch size, workers and teacher, so that each step costs what it will.
The estimate covers what `ht2.train.fit` does: one evaluation before training, then per epoch
its steps and one evaluation.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ht2.device import resolve_device
from ht2.errors import HT2Error
from ht2.models import ModelEntry
from ht2.train.config import TrainConfig
from ht2.train.distributed import World
from ht2.train.features import block_distillation
from ht2.train.inputs import build_inputs
from ht2.train.loop import StepSettings, step_loss
from ht2.train.precision import resolve_precision
from ht2.train.schedules import build_optimizer

PROBE_STEPS = 5  # timed steps, after one untimed step that starts the loader and warms up


@dataclass(frozen=True)
class EpochBudget:
    """The measured cost of an epoch and the number of epochs that fit in `minutes`."""

    minutes: float
    epochs: int
    steps_per_epoch: int
    seconds_per_step: float
    eval_seconds: float  # one pass over the evaluation split
    timed_steps: int

    @property
    def epoch_seconds(self) -> float:
        return self.steps_per_epoch * self.seconds_per_step + self.eval_seconds

    def describe(self, batch_size: int) -> str:
        """'one epoch takes about 1.9 min here (390 steps of batch 128 at 0.25 s, ...)'."""
        return (
            f"one epoch takes about {duration(self.epoch_seconds)} here "
            f"({self.steps_per_epoch} steps of batch {batch_size} at "
            f"{self.seconds_per_step:.3f} s, timed on {self.timed_steps}, and "
            f"{duration(self.eval_seconds)} of evaluation)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "epoch_seconds": self.epoch_seconds}


def duration(seconds: float) -> str:
    """'42 s' below two minutes, else '3.5 min'."""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def epochs_for(minutes: float, epoch_seconds: float, eval_seconds: float) -> int:
    """Whole epochs that fit in `minutes` after the evaluation before training."""
    return max(0, math.floor((minutes * 60 - eval_seconds) / max(epoch_seconds, 1e-9)))


def epochs_within(
    model: nn.Module,
    entry: ModelEntry,
    data: str,
    config: TrainConfig,
    minutes: float,
    teacher: nn.Module | None = None,
    probe_steps: int = PROBE_STEPS,
) -> EpochBudget:
    """Time `probe_steps` training steps and a few evaluation batches of `model` as `config`
    would run them, and return how many epochs fit in `minutes`.

    HT2Error when not even one epoch fits, naming the minutes one would need.
    """
    if not (minutes > 0 and math.isfinite(minutes)):
        raise HT2Error(
            f"budget_minutes must be a positive number of minutes, not {minutes}",
            params="budget_minutes",
        )
    device = resolve_device(config.device)
    precision = resolve_precision(config.amp, config.channels_last, device)
    inputs = build_inputs(data, entry, config, World(0, 1, 0, device), config.batch_size)
    steps_per_epoch = len(inputs.train)
    if config.max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps)
    layout = torch.channels_last if precision.channels_last else torch.contiguous_format
    work = copy.deepcopy(model).to(device, memory_format=layout)
    if teacher is not None:
        teacher = copy.deepcopy(teacher).to(device, memory_format=layout).eval()
    settings = StepSettings(
        device,
        precision.amp,
        precision.channels_last,
        config.clip_grad,
        config.label_smoothing,
        teacher,
        config.distill_temperature,
        config.distill_weight,
        blocks=block_distillation(work, teacher, config),
    )
    per_step, timed = _time_training(work, inputs.train, config, settings, probe_steps)
    per_batch = _time_evaluation(work, inputs.evaluation, device, probe_steps)
    eval_seconds = per_batch * len(inputs.evaluation)
    epoch_seconds = steps_per_epoch * per_step + eval_seconds
    budget = EpochBudget(
        minutes=minutes,
        epochs=epochs_for(minutes, epoch_seconds, eval_seconds),
        steps_per_epoch=steps_per_epoch,
        seconds_per_step=per_step,
        eval_seconds=eval_seconds,
        timed_steps=timed,
    )
    if budget.epochs < 1:
        needed = math.ceil((epoch_seconds + eval_seconds) / 6) / 10  # minutes, rounded up
        raise HT2Error(
            f"budget_minutes {minutes:g} is too short for one epoch: "
            f"{budget.describe(config.batch_size)}, so one epoch and the evaluation before it "
            f"need about {needed:g} minutes; give budget_minutes {needed:g} or more, "
            "or epochs",
            params=("budget_minutes", "epochs"),
        )
    return budget


def _timed_batches(batches: Iterable, count: int, device: torch.device) -> Iterator[Any]:
    """The first `count` + 1 batches on `device`; the clock is the caller's."""
    for index, (images, labels) in enumerate(itertools.islice(batches, count + 1)):
        if len(labels):
            yield index, images.to(device), labels.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_training(
    model: nn.Module,
    batches: Iterable,
    config: TrainConfig,
    settings: StepSettings,
    count: int,
) -> tuple[float, int]:
    """Seconds per optimiser step (data loading included) over up to `count` steps after the
    first, and how many were timed."""
    optimizer = build_optimizer(
        model, config.lr, config.momentum, config.nesterov, config.weight_decay
    )
    model.train()
    first = start = time.perf_counter()
    timed = 0
    device = settings.device
    for index, images, labels in _timed_batches(batches, count, device):
        if settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        _, loss = step_loss(model, images, labels, settings)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if index == 0:  # the loader's start and the first step's warm-up are not typical
            start = time.perf_counter()
        else:
            timed += 1
    if timed == 0:  # a single batch: its time, warm-up and all, is the only measure
        return _per_item(first, 1), 1
    return _per_item(start, timed), timed


def _time_evaluation(
    model: nn.Module, batches: Iterable, device: torch.device, count: int
) -> float:
    """Seconds per evaluation batch over up to `count` batches after the first."""
    model.eval()
    first = start = time.perf_counter()
    timed = 0
    with torch.no_grad():
        for index, images, _ in _timed_batches(batches, count, device):
            model(images)
            _sync(device)
            if index == 0:
                start = time.perf_counter()
            else:
                timed += 1
    return _per_item(first if timed == 0 else start, timed)


def _per_item(start: float, count: int) -> float:
    return (time.perf_counter() - start) / max(count, 1)
