"""The BatchNorm layers whose running statistics ht2 re-estimates (after compression) or sets
aside (to measure with batch statistics): one list, so every step treats the same layers."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def norm_states(model: nn.Module) -> Callable[[], None]:
    """Copy the state of every NORMS layer of `model` now; the returned function puts it back
    (to undo a re-estimation that did not help)."""
    norms = [module for module in model.modules() if isinstance(module, NORMS)]
    saved = [copy.deepcopy(norm.state_dict()) for norm in norms]

    def restore() -> None:
        for norm, state in zip(norms, saved, strict=True):
            norm.load_state_dict(state)

    return restore
