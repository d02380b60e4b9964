"""Data-aware compression: factors whitened by, and refitted on, what each layer sees."""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "DataAwareFit": "ht2.dataaware.api",
    "DataAwareOptions": "ht2.dataaware.api",
    "compress_data_aware": "ht2.dataaware.api",
    "LayerStats": "ht2.dataaware.stats",
    "damped_root": "ht2.dataaware.whiten",
    "whitened_factorize": "ht2.dataaware.whiten",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DataAwareFit",
    "DataAwareOptions",
    "LayerStats",
    "compress_data_aware",
    "damped_root",
    "whitened_factorize",
]
