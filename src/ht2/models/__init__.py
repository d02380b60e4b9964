"""Model zoo: CIFAR-10 and ImageNet CNNs by name, torchvision and timm models, weight files."""

from ht2.models.entry import ModelEntry
from ht2.models.registry import ALIASES, create, get_entry, list_models
from ht2.models.weights import load_weights, read_state_dict

__all__ = [
    "ALIASES",
    "ModelEntry",
    "create",
    "get_entry",
    "list_models",
    "load_weights",
    "read_state_dict",
]
