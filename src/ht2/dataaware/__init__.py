"""Data-aware compression: factors whitened by, and refitted on, what each layer sees."""

from ht2.dataaware.api import DataAwareOptions, compress_data_aware
from ht2.dataaware.stats import LayerStats
from ht2.dataaware.whiten import damped_root, whitened_factorize

__all__ = [
    "DataAwareOptions",
    "LayerStats",
    "compress_data_aware",
    "damped_root",
    "whitened_factorize",
]
