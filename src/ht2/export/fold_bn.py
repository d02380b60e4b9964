"""Fold each BatchNorm2d that directly follows a conv into that conv, for inference.

After a factorized layer the conv is its last one (`expand`), since the layer returns that
conv's output; after a dense conv it is the conv itself. The BatchNorm becomes nn.Identity, so
the result is for inference (eval mode) only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.export.trace import foldable_pairs, tensors_in
from ht2.io.folds import apply_folds

CHECK_TOLERANCE = 1e-4  # relative to the largest output: far above rounding, far below a wrong fold


@dataclass
class FoldReport:
    """Which BatchNorms were folded into which conv, which were not and why, and the check."""

    folded: list[dict[str, str]] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    max_abs_diff: float = 0.0
    max_abs_output: float = 0.0

    def to_dict(self) -> dict:
        return {
            "folded": self.folded,
            "refused": self.refused,
            "max_abs_diff": self.max_abs_diff,
            "max_abs_output": self.max_abs_output,
        }


def fold_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Scale `conv`'s output channels and shift its bias (added if absent) so that it computes
    bn(conv(x)) with `bn`'s running statistics; computed in float64, stored in conv's dtype."""
    with torch.no_grad():
        var = bn.running_var.double()
        scale = torch.rsqrt(var + bn.eps)
        shift = -bn.running_mean.double() * scale
        if bn.weight is not None:
            scale = scale * bn.weight.double()
            shift = shift * bn.weight.double()
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        new_weight = conv.weight.double() * scale.view(-1, *[1] * (conv.weight.dim() - 1))
        conv.weight.copy_(new_weight.to(conv.weight.dtype))
        new_bias = (bias * scale + shift).to(conv.weight.dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias)
        else:
            conv.bias.copy_(new_bias)


def _check_inputs(model: nn.Module, input_size: tuple[int, ...]) -> list[torch.Tensor]:
    """Three random inputs (two to find pairs, one to check), the same on every call."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(b, *input_size, generator=generator).to(device) for b in (2, 1, 3)]


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t.detach() for t in tensors_in(model(x))]


def fold_batchnorms(model: nn.Module, input_size: tuple[int, ...]) -> tuple[nn.Module, FoldReport]:
    """A copy of `model` (eval mode) with every safely foldable BatchNorm2d folded away.

    Pairs are found by running the model on random inputs of `input_size` (see
    `ht2.export.trace`); the copy is then checked against `model` on another input and an
    HT2Error is raised if they disagree. `model` itself is left untouched.
    """
    model.eval()
    find_a, find_b, check = _check_inputs(model, input_size)
    pairs, refused = foldable_pairs(model, [find_a, find_b])
    folded = copy.deepcopy(model)
    folds = [{"bn": bn, "into": conv} for bn, conv in pairs.items()]
    for pair in folds:
        fold_into_conv(folded.get_submodule(pair["into"]), folded.get_submodule(pair["bn"]))
    apply_folds(folded, folds)
    report = FoldReport(folded=folds, refused=refused)
    expected, found = _outputs(model, check), _outputs(folded.eval(), check)
    if [e.shape for e in expected] != [f.shape for f in found]:
        raise HT2Error("folding BatchNorms changed the model's outputs' shapes; nothing written")
    for e, f in zip(expected, found, strict=True):
        report.max_abs_diff = max(report.max_abs_diff, (e - f).abs().max().item())
        report.max_abs_output = max(report.max_abs_output, e.abs().max().item())
    if report.max_abs_diff > CHECK_TOLERANCE * max(report.max_abs_output, 1e-12):
        raise HT2Error(
            f"folding BatchNorms changed the outputs by up to {report.max_abs_diff:.3g} "
            f"(largest output {report.max_abs_output:.3g}); this model cannot be folded safely, "
            "export it without fold_bn",
            params="fold_bn",
        )
    return folded, report
