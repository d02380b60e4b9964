"""Run a model once with temporary forward hooks: how shapes, MACs and order are observed."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ht2.decomp.threads import threads_for

Hook = Callable[..., None]


def observe(
    model: nn.Module,
    example_input: torch.Tensor,
    hooks: Iterable[tuple[nn.Module, Hook]],
    before: bool = False,
) -> None:
    """One eval-mode, gradient-free forward of `model` with `hooks` attached, then detached.

    Each hook is `hook(module, inputs, output)`, or `hook(module, inputs)` with `before`.
    The model's train/eval mode is restored afterwards. An input of fewer than 2**23 elements
    (threads_for: any batch-1 image, a VGG-16 batch up to about 55 at 224 px) runs on one
    thread: these passes only read shapes and counts, and more threads slow them on a busy
    machine.
    """
    handles = [
        module.register_forward_pre_hook(hook) if before else module.register_forward_hook(hook)
        for module, hook in hooks
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), threads_for(example_input.numel()):
            model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
