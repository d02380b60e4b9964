"""Data for evaluating and training models: ImageFolder trees, archives and CIFAR-10 batches.

from ht2.data import eval_dataset, make_loader
entry = ht2.models.get_entry("cifar10_resnet20")
loader = make_loader(eval_dataset("cifar10-jpeg/", entry, cache=True), batch_size=256)
"""

from ht2.data.datasets import eval_dataset, train_dataset
from ht2.data.loader import make_loader
from ht2.data.paths import cache_root
from ht2.data.transforms import eval_transform, train_transform

__all__ = [
    "cache_root",
    "eval_dataset",
    "eval_transform",
    "make_loader",
    "train_dataset",
    "train_transform",
]
