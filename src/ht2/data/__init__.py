"""Data for evaluating and training models: ImageFolder trees, archives and CIFAR-10 batches.

from ht2.data import eval_dataset, make_loader
entry = ht2.models.get_entry("cifar10_resnet20")
loader = make_loader(eval_dataset("cifar10-jpeg/", entry, cache=True), batch_size=256)
"""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "decoded_split": "ht2.data.decoded",
    "eval_dataset": "ht2.data.datasets",
    "train_dataset": "ht2.data.datasets",
    "make_loader": "ht2.data.loader",
    "cache_root": "ht2.data.paths",
    "eval_transform": "ht2.data.transforms",
    "train_transform": "ht2.data.transforms",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "cache_root",
    "decoded_split",
    "eval_dataset",
    "eval_transform",
    "make_loader",
    "train_dataset",
    "train_transform",
]
