"""The models defined in this package: CIFAR-10 ResNets and DenseNet-40, AlexNet with BN."""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from ht2.models.alexnet import alexnet_bn
from ht2.models.bundled import bundled_loader
from ht2.models.cifar_resnet import DEPTHS, cifar_resnet
from ht2.models.densenet import densenet40
from ht2.models.entry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


Stats = tuple[float, float, float]


def _cifar(name: str, build: Callable[..., nn.Module], mean: Stats, std: Stats) -> ModelEntry:
    return ModelEntry(
        name=name,
        input_size=(3, 32, 32),
        mean=mean,
        std=std,
        num_classes=10,
        family="cifar10",
        resize=None,
        build=build,
        pretrained=bundled_loader(name, build),
    )


def _alexnet() -> ModelEntry:
    return ModelEntry(
        name="imagenet_alexnet",
        input_size=(3, 227, 227),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_classes=1000,
        family="imagenet",
        resize=256,
        build=alexnet_bn,
        pretrained=bundled_loader("imagenet_alexnet", alexnet_bn),
    )


def own_entries() -> dict[str, ModelEntry]:
    """The entries of this package's own models, by canonical name."""
    entries = {}
    for depth in DEPTHS:
        name = f"cifar10_resnet{depth}"
        build = functools.partial(cifar_resnet, depth)
        # These published weights were trained with ImageNet normalisation statistics.
        entries[name] = _cifar(name, build, IMAGENET_MEAN, IMAGENET_STD)
    entries["cifar10_densenet40"] = _cifar(
        "cifar10_densenet40", densenet40, CIFAR10_MEAN, CIFAR10_STD
    )
    entries["imagenet_alexnet"] = _alexnet()
    return entries
