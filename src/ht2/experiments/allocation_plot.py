"""allocation.png: where a budget went, layer by layer, for one or several compressions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ht2.surgery import CompressionReport

KEY_STYLES = ("-", "--", ":", "-.")


def plot_allocation(reports: Mapping[str, CompressionReport], path: Path, title: str) -> None:
    """Top: the share of each layer's parameters kept; bottom: its ranks (one line per rank key),
    one colour per report (label: method, allocation); layers in model order on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(layer.name for r in reports.values() for layer in r.layers))
    figure, (kept, ranks) = plt.subplots(
        2, 1, figsize=(max(7.0, 0.28 * len(names) + 2), 7), dpi=120, sharex=True
    )
    for label, report in reports.items():
        by_name = {layer.name: layer for layer in report.layers}
        xs = [i for i, name in enumerate(names) if name in by_name]
        shares = [
            by_name[names[i]].params_after / max(by_name[names[i]].params_before, 1) for i in xs
        ]
        (line,) = kept.plot(xs, shares, marker="o", markersize=3, linewidth=1.2, label=label)
        keys = list(dict.fromkeys(k for layer in report.replaced for k in layer.ranks))
        for key, style in zip(keys, KEY_STYLES * 2, strict=False):
            points = [
                (i, by_name[names[i]].ranks[key]) for i in xs if key in by_name[names[i]].ranks
            ]
            ranks.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                linestyle=style,
                marker=".",
                color=line.get_color(),
                linewidth=1.0,
                label=f"{label} {key}",
            )
    kept.set_ylabel("parameters kept (share)")
    kept.set_ylim(bottom=0)
    kept.legend(fontsize=7)
    kept.set_title(title, fontsize=10)
    ranks.set_ylabel("rank kept")
    ranks.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ranks.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
