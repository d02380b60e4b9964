"""Measures of what compression won: parameters, MACs, latency (and later accuracy)."""

from ht2.metrics.counting import count_params, layer_macs, macs_under
from ht2.metrics.flops import MacCount, count_macs
from ht2.metrics.latency import (
    LayerTiming,
    Timing,
    factorized_layers,
    layer_input_shapes,
    num_threads,
    time_layers,
    time_models,
)

__all__ = [
    "LayerTiming",
    "MacCount",
    "Timing",
    "count_macs",
    "count_params",
    "factorized_layers",
    "layer_input_shapes",
    "layer_macs",
    "macs_under",
    "num_threads",
    "time_layers",
    "time_models",
]
