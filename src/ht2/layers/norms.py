"""The BatchNorm layers whose running statistics ht2 re-estimates (after compression) or sets
aside (to measure with batch statistics): one list, so every step treats the same layers."""

from __future__ import annotations

from torch import nn

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
