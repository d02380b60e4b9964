"""Pareto pictures: parameter reduction against accuracy, one curve per method."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ht2.experiments.sweep import SweepRow


class Point(NamedTuple):
    """One compressed model on a Pareto curve: position, bubble area and its label."""

    x: float
    y: float
    size: float
    label: str


def draw_curves(
    curves: Mapping[str, Sequence[Point]],
    path: Path,
    title: str,
    ylabel: str,
    baseline: float | None = None,
) -> None:
    """One line per curve (points sorted by x, labelled), a dashed `baseline`, saved to `path`.

    x is always the parameter reduction; the legend is titled "method".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, unsorted in curves.items():
        points = sorted(unsorted, key=lambda p: p.x)
        xs = [p.x for p in points]
        ys = [p.y for p in points]
        (line,) = axes.plot(xs, ys, marker="", linewidth=1.5, label=name)
        axes.scatter(
            xs,
            ys,
            s=[p.size for p in points],
            alpha=0.45,
            color=line.get_color(),
            edgecolors="black",
            linewidths=0.5,
        )
        for p in points:
            axes.annotate(
                p.label, (p.x, p.y), textcoords="offset points", xytext=(6, 6), fontsize=8
            )
    if baseline is not None:
        axes.axhline(baseline, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("parameter reduction (x, higher is smaller)")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    if len(curves) > 1:
        axes.legend(title="method")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_pareto(rows: Sequence[SweepRow], path: Path, title: str) -> None:
    """x: parameter reduction, y: change of top-1 (points), bubble area: MAC reduction.

    One curve per method, each point labelled with its energy.
    """
    curves: dict[str, list[Point]] = {}
    for r in rows:
        y = r.delta_top1 if r.delta_top1 is not None else 0.0
        point = Point(r.param_reduction, y, 40 * r.mac_reduction, f"e={r.energy:g}")
        curves.setdefault(r.method, []).append(point)
    draw_curves(
        curves,
        path,
        title + "  (bubble area: MAC reduction)",
        "change of top-1 (points)",
        baseline=0.0,
    )
