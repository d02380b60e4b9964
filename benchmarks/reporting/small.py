"""How small: parameters and MACs per energy, and the time to compress big models."""

from __future__ import annotations

from .base import Results, Section, command, grouped, net_name, num, table, times


def sizes_section(results: Results) -> Section | None:
    data = results.json("compression_sizes.json")
    if data is None:
        return None
    rows = [
        [
            net_name(r["model"]),
            f"{r['energy']:g}",
            grouped(r["params_before"]),
            grouped(r["params_after"]),
            times(r["param_reduction"]),
            times(r["mac_reduction"]),
        ]
        for r in data["sizes"]
    ]
    seconds = [r["seconds"] for r in data["sizes"]]
    parts = [
        command(
            "python benchmarks/compression_sizes.py          "
            "# writes benchmarks/results/compression_sizes.json"
        ),
        "HT-2 with `--no-keep-if-larger`, input 1x3x32x32, e the energy kept per layer.",
        table(
            ["model", "e", "params before", "params after", "params x", "MACs x"],
            rows,
            "lrrrrr",
        ),
        "Every layer's ranks and these totals equal the reference implementation's "
        "(`tests/test_reference_parity.py` checks all these cases against "
        "`../shared/docs/reference-ranks.json`). Compressing one of these networks took "
        f"{num(min(seconds))}-{num(max(seconds))} s.",
    ]
    if data.get("timings"):
        parts += [
            "Time to compress torchvision models (random init, the whole `ht2.compress` call, "
            f"keep-if-larger on, {data['torch_threads']} thread), from "
            "`python benchmarks/compression_sizes.py --threads 1`, while a training job ran on "
            "the other core:",
            table(
                ["model", "e", "seconds", "of which decomposing"],
                [
                    [
                        t["model"],
                        f"{t['energy']:g}",
                        num(t["seconds"], 1),
                        num(t["decompose_seconds"], 1),
                    ]
                    for t in data["timings"]
                ],
                "lrrr",
            ),
            "Loaded runs are not comparable with each other: compare only runs made side by "
            "side (see *Decomposition speed* below for a controlled measurement).",
        ]
    return Section("How small: compression sizes", "\n\n".join(parts))


SECTIONS = [sizes_section]
