"""Experiments built from the library's parts: energy sweeps and their Pareto plots."""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "plot_pareto": "ht2.experiments.pareto",
    "SweepRow": "ht2.experiments.sweep",
    "sweep": "ht2.experiments.sweep",
    "sweep_markdown": "ht2.experiments.sweep",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["SweepRow", "plot_pareto", "sweep", "sweep_markdown"]
