"""Parameter and multiply-accumulate (MAC) counts, per layer and in total."""

from __future__ import annotations

import torch
from torch import nn

from ht2.metrics.observe import observe

_COUNTED = (nn.Linear, nn.modules.conv._ConvNd)


def count_params(module: nn.Module) -> int:
    """Number of parameters (every element of every parameter, each shared one once)."""
    return sum(p.numel() for p in module.parameters())


def _leaf_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    per_sample = output[0].numel() if output.dim() > 1 else output.numel()
    if isinstance(module, nn.Linear):
        return per_sample * module.in_features
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        per_sample = inputs[0][0].numel() if inputs[0].dim() > 1 else inputs[0].numel()
        channels = module.out_channels
    else:
        channels = module.in_channels
    kernel = 1
    for size in module.kernel_size:
        kernel *= size
    return per_sample * (channels // module.groups) * kernel


def layer_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """MACs of every Conv (transposed too) and Linear module for one sample, by qualified name.

    Counts output elements x in-channels/groups x kernel area for convolutions and
    in x out for linear layers (the convention of the paper's tables). The example input's
    first dimension is the batch; it should be 1. Modules that do not run count 0.
    """
    counted = [(n, m) for n, m in model.named_modules() if isinstance(m, _COUNTED)]
    macs = dict.fromkeys((name for name, _ in counted), 0)

    def hook_for(name: str):
        def hook(module, inputs, output):
            macs[name] += _leaf_macs(module, inputs, output)

        return hook

    observe(model, example_input, [(module, hook_for(name)) for name, module in counted])
    return macs


def macs_under(macs: dict[str, int], prefix: str) -> int:
    """Sum of the MACs of `prefix` and every module below it."""
    return sum(v for k, v in macs.items() if k == prefix or k.startswith(prefix + "."))
