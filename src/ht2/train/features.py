"""Block-output distillation: the student's residual blocks are pulled towards the teacher's
outputs of the same blocks, a dense signal that logits alone do not give a compressed network
whose blocks keep the original's shapes (it is the block fit of `--refit blocks`, in training).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from ht2.dataaware.blocks import block_of
from ht2.errors import HT2Error

if TYPE_CHECKING:
    from ht2.train.config import TrainConfig


def block_names(model: nn.Module) -> list[str]:
    """The blocks (elements of an nn.Sequential that hold parameterised layers) of `model`,
    in the order the model lists its modules."""
    leaves = [
        name
        for name, module in model.named_modules()
        if name and not list(module.children()) and any(True for _ in module.parameters())
    ]
    return list(dict.fromkeys(block_of(model, leaves).values()))


class BlockOutputs:
    """Forward hooks that keep the outputs of named modules, only inside `recording()`."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self._on = False
        self._handles = [modules[name].register_forward_hook(self._keeper(name)) for name in names]

    def _keeper(self, name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if self._on and isinstance(output, torch.Tensor):
                self.outputs[name] = output

        return hook

    @contextmanager
    def recording(self) -> Iterator[dict[str, torch.Tensor]]:
        """Keep the outputs of the forward passes run inside; they are dropped on exit."""
        self.outputs, self._on = {}, True
        try:
            yield self.outputs
        finally:
            self._on = False
            self.outputs = {}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def block_output_loss(
    student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Mean over the blocks both hold with one shape of the student's squared error relative
    to the teacher output's mean square (so that every block counts alike); HT2Error when no
    block matches (a pruned student, say, whose blocks changed width)."""
    terms = [
        (student[name].float() - target.float()).pow(2).mean()
        / target.float().pow(2).mean().clamp_min(1e-12)
        for name, target in teacher.items()
        if name in student and student[name].shape == target.shape
    ]
    if not terms:
        raise HT2Error(
            "block distillation: no block of the student gives an output of its teacher's "
            "shape; drop distill_blocks",
            params="distill_blocks",
        )
    return torch.stack(terms).mean()


class BlockDistillation:
    """The student's and the teacher's block outputs, recorded together for one step."""

    def __init__(self, student: nn.Module, teacher: nn.Module, weight: float) -> None:
        names = [name for name in block_names(student) if name in set(block_names(teacher))]
        if not names:
            raise HT2Error(
                "block distillation: the model has no blocks (elements of an nn.Sequential) "
                "that its teacher shares; drop distill_blocks",
                params="distill_blocks",
            )
        self.names = names
        self.weight = weight
        self.student = BlockOutputs(student, names)
        self.teacher = BlockOutputs(teacher, names)

    def remove(self) -> None:
        self.student.remove()
        self.teacher.remove()


def block_distillation(
    student: nn.Module, teacher: nn.Module | None, config: TrainConfig
) -> BlockDistillation | None:
    """The block distillation `config` asks for (a teacher, distill, distill_blocks > 0), its
    hooks installed on both models; None when it asks for none."""
    if teacher is None or not config.distill or config.distill_blocks <= 0:
        return None
    return BlockDistillation(student, teacher, config.distill_blocks)
