"""Experiments built from the library's parts: energy sweeps and their Pareto plots."""

from ht2.experiments.pareto import plot_pareto
from ht2.experiments.sweep import SweepRow, sweep, sweep_markdown

__all__ = ["SweepRow", "plot_pareto", "sweep", "sweep_markdown"]
