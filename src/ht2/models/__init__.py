"""Model zoo: CIFAR-10 and ImageNet CNNs by name, torchvision and timm models, weight files."""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "ModelEntry": "ht2.models.entry",
    "ALIASES": "ht2.models.registry",
    "create": "ht2.models.registry",
    "get_entry": "ht2.models.registry",
    "list_models": "ht2.models.registry",
    "load_weights": "ht2.models.weights",
    "read_state_dict": "ht2.models.weights",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ALIASES",
    "ModelEntry",
    "create",
    "get_entry",
    "list_models",
    "load_weights",
    "read_state_dict",
]
