"""Measures of what compression won: parameters, MACs, latency (run like for like), accuracy."""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "count_params": "ht2.metrics.counting",
    "layer_macs": "ht2.metrics.counting",
    "macs_under": "ht2.metrics.counting",
    "MacCount": "ht2.metrics.flops",
    "count_macs": "ht2.metrics.flops",
    "LayerTiming": "ht2.metrics.latency",
    "Timing": "ht2.metrics.latency",
    "factorized_layers": "ht2.metrics.latency",
    "layer_input_shapes": "ht2.metrics.latency",
    "num_threads": "ht2.metrics.latency",
    "time_layers": "ht2.metrics.latency",
    "time_models": "ht2.metrics.latency",
    "SpeedComparison": "ht2.metrics.like_for_like",
    "compare_speed": "ht2.metrics.like_for_like",
    "treatment_matrix": "ht2.metrics.like_for_like",
    "Prepared": "ht2.metrics.treatment",
    "Treatment": "ht2.metrics.treatment",
    "all_treatments": "ht2.metrics.treatment",
    "treat": "ht2.metrics.treatment",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "LayerTiming",
    "MacCount",
    "Prepared",
    "SpeedComparison",
    "Timing",
    "Treatment",
    "all_treatments",
    "compare_speed",
    "count_macs",
    "count_params",
    "factorized_layers",
    "layer_input_shapes",
    "layer_macs",
    "macs_under",
    "num_threads",
    "time_layers",
    "time_models",
    "treat",
    "treatment_matrix",
]
