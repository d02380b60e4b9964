"""Optimiser and learning-rate schedules of the recipes (SGD; one-cycle, multistep, step)."""

from __future__ import annotations

import torch
from torch import nn

from ht2.choices import SCHEDULES


def build_optimizer(
    model: nn.Module, lr: float, momentum: float, nesterov: bool, weight_decay: float
) -> torch.optim.SGD:
    """SGD; no weight decay on biases and normalisation parameters (1-D tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    lr: float,
    epochs: int,
    steps_per_epoch: int,
    milestones: list[int],
    step_size: int,
    gamma: float,
) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """The scheduler and whether it steps every batch (True) or every epoch (False)."""
    if name == "onecycle":
        total = max(1, epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total), True
    if name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=gamma), False
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma=gamma), False
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), False
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
