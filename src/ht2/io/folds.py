"""Folded BatchNorms in a saved model: the manifest's record of them, and their replay.

A folded model has each folded BatchNorm2d replaced by nn.Identity and its scale and shift
carried by the conv before it, which gains a bias if it had none. The manifest lists the pairs
as {"bn": name, "into": conv name}; loading replays that structure before reading tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ht2.errors import HT2Error

FOLDED_BN = "folded_bn"


def folds_of(model: nn.Module) -> list[dict[str, str]]:
    """The folded pairs recorded on `model` (by `ht2.export.fold_batchnorms` or by loading)."""
    return [dict(pair) for pair in getattr(model, "ht2_folded_bn", None) or []]


def check_folds(data: Any, where: str) -> list[dict[str, str]]:
    """The manifest's folded_bn list, every pair {"bn": str, "into": str}, else a clear error."""
    if not isinstance(data, list) or not all(
        isinstance(pair, dict)
        and set(pair) == {"bn", "into"}
        and all(isinstance(value, str) and value for value in pair.values())
        for pair in data
    ):
        raise HT2Error(
            f'{where} has a malformed "{FOLDED_BN}" list: want [{{"bn": ..., "into": ...}}]'
        )
    return [dict(pair) for pair in data]


def apply_folds(model: nn.Module, folds: list[dict[str, str]]) -> nn.Module:
    """Give `model` the structure of its folded form, in place: each listed BatchNorm2d becomes
    nn.Identity and each listed conv gets a (zero) bias; the tensors are loaded afterwards."""
    for pair in folds:
        bn = _submodule(model, pair["bn"])
        conv = _submodule(model, pair["into"])
        if type(bn) is not nn.BatchNorm2d or type(conv) is not nn.Conv2d:
            raise HT2Error(
                f"the folded pair {pair} does not fit the model: want a BatchNorm2d and a Conv2d, "
                f"found {type(bn).__name__} and {type(conv).__name__}"
            )
        model.set_submodule(pair["bn"], nn.Identity())
        if conv.bias is None:
            conv.bias = nn.Parameter(
                torch.zeros(conv.out_channels, device=conv.weight.device, dtype=conv.weight.dtype)
            )
    model.ht2_folded_bn = folds_of(model) + [dict(pair) for pair in folds]
    return model


def _submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise HT2Error(f"the folded pairs name '{name}', which the model does not have") from None
