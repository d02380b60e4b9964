"""One epoch of training and one evaluation: the loop every command shares."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ht2.choices import AMP_NAMES
from ht2.errors import HT2Error
from ht2.metrics.accuracy import evaluate_accuracy
from ht2.train.distill import distillation_loss
from ht2.train.distributed import World, all_reduce_sum
from ht2.train.features import BlockDistillation, block_output_loss

AMP_DTYPES = dict(zip(AMP_NAMES, (torch.bfloat16, torch.float16), strict=True))


@dataclass
class StepSettings:
    """What a training step needs besides the model and the batch."""

    device: torch.device
    amp: str = "none"
    channels_last: bool = False
    clip_grad: float | None = None
    label_smoothing: float = 0.0
    teacher: nn.Module | None = None
    distill_temperature: float = 4.0
    distill_weight: float = 0.5
    augment_batch: Callable[[torch.Tensor], torch.Tensor] | None = None
    blocks: BlockDistillation | None = None  # block outputs matched to the teacher's
    after_step: Callable[[], None] | None = None  # called after every optimiser step


def _autocast(settings: StepSettings):
    """bfloat16 on any device; float16 on CUDA only (it needs the GradScaler)."""
    enabled = settings.amp == "bf16" or (settings.amp == "fp16" and settings.device.type == "cuda")
    dtype = AMP_DTYPES.get(settings.amp, torch.bfloat16)
    return torch.autocast(device_type=settings.device.type, dtype=dtype, enabled=enabled)


def step_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, s: StepSettings):
    """The logits and the loss of one training step (autocast, distillation) as `s` says."""
    if s.blocks is None or s.teacher is None:
        return _logits_and_loss(model, images, labels, s)
    with s.blocks.student.recording() as student, s.blocks.teacher.recording() as teacher:
        logits, loss = _logits_and_loss(model, images, labels, s)
        with _autocast(s):
            loss = loss + s.blocks.weight * block_output_loss(student, teacher)
    return logits, loss


def _logits_and_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, s: StepSettings):
    with _autocast(s):
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=s.label_smoothing)
        if s.teacher is not None:
            with torch.no_grad():
                teacher_logits = s.teacher(images)
            soft = distillation_loss(logits, teacher_logits, s.distill_temperature)
            loss = (1 - s.distill_weight) * loss + s.distill_weight * soft
    return logits, loss


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    per_step_schedule: bool,
    scaler: torch.amp.GradScaler,
    settings: StepSettings,
    world: World,
    max_steps: int | None = None,
    desc: str = "train",
) -> dict[str, float]:
    """Train over `batches` once (or `max_steps` optimiser steps); loss and top-1 all-reduced.

    A NaN or infinite loss stops the run with HT2Error (the caller keeps the last checkpoint).
    """
    model.train()
    total_loss = correct = seen = steps = 0.0
    start = time.perf_counter()
    bar = tqdm(
        batches,
        desc=desc,
        unit="batch",
        file=sys.stderr,
        leave=False,
        disable=None if world.is_main else True,
    )
    for images, labels in bar:
        if max_steps is not None and steps >= max_steps:
            break
        if len(labels) == 0:
            continue
        images = images.to(settings.device, non_blocking=True)
        labels = labels.to(settings.device, non_blocking=True)
        if settings.augment_batch is not None:
            images = settings.augment_batch(images)
        if settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits, loss = step_loss(model, images, labels, settings)
        if not math.isfinite(loss.item()):
            raise HT2Error(
                f"the loss became {loss.item()} at step {int(steps) + 1}; lower lr "
                "(the last good checkpoint is kept)",
                params="lr",
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if settings.clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if settings.after_step is not None:
            settings.after_step()
        if per_step_schedule:
            scheduler.step()
        steps += 1
        n = len(labels)
        total_loss += loss.item() * n
        correct += (logits.argmax(1) == labels).sum().item()
        seen += n
        elapsed = time.perf_counter() - start
        bar.set_postfix(
            loss=f"{total_loss / seen:.3f}",
            top1=f"{100 * correct / seen:.1f}",
            img_s=f"{seen * world.size / elapsed:.0f}",
            refresh=False,
        )
    bar.close()
    total_loss, correct, seen, steps = all_reduce_sum([total_loss, correct, seen, steps], world)
    seconds = time.perf_counter() - start
    return {
        "loss": total_loss / max(seen, 1),
        "top1": 100 * correct / max(seen, 1),
        "images": int(seen),
        "steps": int(steps // world.size),
        "seconds": seconds,
        "images_per_second": seen / max(seconds, 1e-9),
    }


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    world: World,
    desc: str = "eval",
) -> dict[str, float]:
    """Top-1/top-5 over this process's shard, combined over every process."""
    result = evaluate_accuracy(model, batches, world.device, progress=world.is_main, desc=desc)
    n = result["n"]
    top5 = result["top5"] if result["top5"] is not None else 0.0
    hits1, hits5, n = all_reduce_sum([result["top1"] * n, top5 * n, n], world)
    return {"top1": hits1 / max(n, 1), "top5": hits5 / max(n, 1), "n": int(round(n))}
