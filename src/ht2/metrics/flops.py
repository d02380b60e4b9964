"""MACs measured by PyTorch's own FLOP counter: a cross-check of the analytic `layer_macs`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

GLOBAL = "Global"  # the flop counter's name for everything that ran


@dataclass(frozen=True)
class MacCount:
    """MACs of one forward pass: in total, per module (descendants included) and per operator."""

    total: int
    per_module: dict[str, int] = field(default_factory=dict)
    per_op: dict[str, int] = field(default_factory=dict)


def _module_name(tracked: str, root: str) -> str | None:
    """The flop counter names modules `RootClass.a.b`; turn that into the qualified name `a.b`."""
    if tracked == root:
        return ""
    if tracked.startswith(root + "."):
        return tracked[len(root) + 1 :]
    return None


def count_macs(model: nn.Module, example_input: torch.Tensor) -> MacCount:
    """MACs of `model(example_input)` as torch.utils.flop_counter counts them (FLOPs / 2).

    Counts the whole batch, so give a batch of one to compare with `layer_macs`. The counter
    sees operators, not modules: convolutions and matrix products (mm, addmm, bmm, attention)
    count, biases, norms, pooling and activations do not, which for Conv/Linear networks is
    exactly the `layer_macs` convention. A module's figure includes everything below it.
    """
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(example_input)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    per_module: dict[str, int] = {}
    for tracked, ops in counts.items():
        name = _module_name(tracked, root)
        if name is not None:
            per_module[name] = per_module.get(name, 0) + sum(ops.values()) // 2
    per_op = {str(op): flops // 2 for op, flops in counts.get(GLOBAL, {}).items()}
    return MacCount(total=counter.get_total_flops() // 2, per_module=per_module, per_op=per_op)
