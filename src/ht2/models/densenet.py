"""DenseNet-40 for CIFAR-10 (growth rate 12, three dense blocks of 12 layers, no bottleneck)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 whose output is concatenated to its input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return cat([x, conv(relu(bn(x)))]) along channels."""
        return torch.cat([x, self.conv1(F.relu(self.bn1(x)))], dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 (same width) followed by 2x2 average pooling."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transition forward pass."""
        return self.pool(self.conv1(F.relu(self.bn1(x))))


class DenseNet(nn.Module):
    """CIFAR DenseNet without bottleneck or compression (DenseNet-40 by default)."""

    def __init__(self, depth: int = 40, growth: int = 12, num_classes: int = 10) -> None:
        super().__init__()
        per_block = (depth - 4) // 3
        width = 2 * growth
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.block1, width = _dense_block(width, growth, per_block)
        self.trans1 = Transition(width)
        self.block2, width = _dense_block(width, growth, per_block)
        self.trans2 = Transition(width)
        self.block3, width = _dense_block(width, growth, per_block)
        self.bn = nn.BatchNorm2d(width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / k))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 0.5)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of 32x32 images."""
        out = self.conv1(x)
        out = self.trans1(self.block1(out))
        out = self.trans2(self.block2(out))
        out = F.relu(self.bn(self.block3(out)))
        return self.linear(self.flatten(self.avgpool(out)))


def _dense_block(in_channels: int, growth: int, layers: int) -> tuple[nn.Sequential, int]:
    block = nn.Sequential(*(DenseLayer(in_channels + i * growth, growth) for i in range(layers)))
    return block, in_channels + layers * growth


def densenet40(num_classes: int = 10) -> DenseNet:
    """Build a randomly initialised DenseNet-40 (k=12) for 32x32 inputs."""
    return DenseNet(depth=40, growth=12, num_classes=num_classes)
