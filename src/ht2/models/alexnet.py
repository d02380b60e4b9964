"""AlexNet with batch normalisation after every convolution and hidden linear layer."""

from __future__ import annotations

import torch
from torch import nn


class AlexNetBN(nn.Module):
    """AlexNet (96-256-384-384-256 convolutions) with BN, for 227x227 inputs."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv(3, 96, 11, stride=4, padding=2),
            nn.MaxPool2d(3, 2),
            *_conv(96, 256, 5, padding=2),
            nn.MaxPool2d(3, 2),
            *_conv(256, 384, 3, padding=1),
            *_conv(384, 384, 3, padding=1),
            *_conv(384, 256, 3, padding=1),
            nn.MaxPool2d(3, 2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096),
            nn.BatchNorm1d(4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.BatchNorm1d(4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of 227x227 images."""
        return self.classifier(self.flatten(self.features(x)))


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def alexnet_bn(num_classes: int = 1000) -> AlexNetBN:
    """Build a randomly initialised AlexNet with batch normalisation."""
    return AlexNetBN(num_classes=num_classes)
