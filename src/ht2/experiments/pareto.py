"""The Pareto picture of a sweep: parameter reduction against accuracy change."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ht2.experiments.sweep import SweepRow


def plot_pareto(rows: Sequence[SweepRow], path: Path, title: str) -> None:
    """x: parameter reduction, y: change of top-1 (points), bubble area: MAC reduction.

    One curve per method, each point labelled with its energy.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    methods = list(dict.fromkeys(row.method for row in rows))
    for method in methods:
        points = sorted((r for r in rows if r.method == method), key=lambda r: r.param_reduction)
        xs = [r.param_reduction for r in points]
        ys = [r.delta_top1 if r.delta_top1 is not None else 0.0 for r in points]
        sizes = [40 * r.mac_reduction for r in points]
        (line,) = axes.plot(xs, ys, marker="", linewidth=1.5, label=method)
        axes.scatter(
            xs, ys, s=sizes, alpha=0.45, color=line.get_color(), edgecolors="black", linewidths=0.5
        )
        for r, x, y in zip(points, xs, ys, strict=True):
            axes.annotate(
                f"e={r.energy:g}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8
            )
    axes.axhline(0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("parameter reduction (x, higher is smaller)")
    axes.set_ylabel("change of top-1 (points)")
    axes.set_title(title + "  (bubble area: MAC reduction)", fontsize=10)
    axes.grid(alpha=0.3)
    if len(methods) > 1:
        axes.legend(title="method")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
