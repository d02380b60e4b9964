"""A moving average of the weights during training (torch's AveragedModel, exponential), kept
and evaluated in place of the live weights when asked for: it rides over the accuracy the early
high-learning-rate steps of a fine-tune knock out of a compressed model."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential average of `model`'s parameters and buffers, `decay` per optimiser step,
    starting from a copy of it; None when `decay` is 0 (off)."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
