"""The pretrained CIFAR-10 weights in ../shared/weights that the benchmarks compress."""

WEIGHTS = {"cifar10_resnet20": "resnet20-12fca82f.th", "cifar10_resnet56": "resnet56-4bfd9763.th"}
