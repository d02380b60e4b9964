"""Measures of what compression won: parameters, MACs (and later latency, accuracy)."""

from ht2.metrics.counting import count_params, layer_macs, macs_under

__all__ = ["count_params", "layer_macs", "macs_under"]
