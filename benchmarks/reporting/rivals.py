"""HT-2 against the rival decompositions at equal size: `ht2 compare`, and HT-2 against Tucker-2
under each rank allocation."""

from __future__ import annotations

from typing import Any

from .accuracy import allocation_rows
from .base import Results, Section, command, method_name, net_name, num, table

COMPARE_COMMAND = (
    "ht2 compare {net} --weights {weights} --data DATA --target-params {targets} --methods "
    "{methods} --threads {threads} --out benchmarks/results/{folder}"
)


def _best(value: float, column: list[float]) -> str:
    return f"**{num(value)}**" if value == max(column) else num(value)


def compare_section(results: Results) -> Section | None:
    files = [(n, results.json(n)) for n in results.names("compare-*/compare.json")]
    if not files:
        return None
    commands = []
    for name, data in files:
        rows = data["rows"]
        commands.append(
            COMPARE_COMMAND.format(
                net=data["model"],
                weights=data["settings"]["weights"],
                targets=",".join(dict.fromkeys(f"{r['target_factor']:g}" for r in rows)),
                methods=",".join(dict.fromkeys(r["method"] for r in rows)),
                threads=data["settings"]["threads"],
                folder=name.split("/")[0],
            )
        )
    parts = [
        command(*commands),
        "Each target is met by bisection on one global energy (uniform allocation). Top-1 (%) "
        "zero-shot and after BatchNorm calibration on 2,048 training images; weight error = "
        "sqrt(sum ||W - W_hat||^2 / sum ||W||^2) over the replaced layers; the best calibrated "
        "figure at each target in bold. Latency x (original median / compressed median, "
        "alternating runs, 1 thread) was taken with the load average at 4-7 on 2 cores: "
        "batch-1 ratios are noise, batch 128 is indicative only. spatial SVD is `svd`.",
    ]
    for _, data in files:
        rows = data["rows"]
        best = {
            t: [r["top1_calibrated"] for r in rows if r["target_factor"] == t]
            for t in {r["target_factor"] for r in rows}
        }
        parts += [
            f"{net_name(data['model'])} (original {num(data['original']['top1'])} %):",
            table(
                [
                    "target",
                    "method",
                    "params x",
                    "MACs x",
                    "weight err",
                    "zero-shot",
                    "calibrated",
                    "latency x b128",
                ],
                [
                    [
                        f"{r['target_factor']:g}x",
                        method_name(r["method"]),
                        num(r["param_reduction"]),
                        num(r["mac_reduction"]),
                        num(r["weight_error"], 4),
                        num(r["top1"]),
                        _best(r["top1_calibrated"], best[r["target_factor"]]),
                        num(r["speedup"].get("128")),
                    ]
                    for r in rows
                ],
                "llrrrrrr",
            ),
        ]
    parts.append(
        "The paper's claim is about accuracy after fine-tuning, which these tables do not "
        "test: see the tables below and *After fine-tuning*."
    )
    return Section("HT-2 against the rivals: equal size, before training", "\n\n".join(parts))


def _best_by(rows: list[dict[str, Any]], key: str) -> dict[tuple, dict[str, Any]]:
    """For each (net, factor, method, device), the best allocation's row by `key`. When two
    files hold the same (method, allocation, size), the later file by name counts, as in the
    allocation tables."""
    latest = {
        (r["net"], r["factor"], r["method"], r["allocation"], r["settings"].get("device")): r
        for r in rows
        if r.get(key) is not None
    }
    best: dict[tuple, dict[str, Any]] = {}
    for (net, factor, method, _, device), row in latest.items():
        slot = (net, factor, method, device)
        if slot not in best or row[key] > best[slot][key]:
            best[slot] = row
    return best


STAGES = {"bn_calibrated": "calibrated", "data_aware": "data-aware refit", "finetuned_1": "1 epoch"}


def tucker_section(results: Results) -> Section | None:
    rows = [
        r
        for r in allocation_rows(results, "allocation-*.json")
        if r["settings"].get("refine_sweeps", "0") in ("0", "None")
        and r["settings"].get("calib_images") == "256"
    ]
    if not rows:
        return None
    lines = []
    for key, stage in STAGES.items():
        best = _best_by(rows, key)
        slots = {(k[0], k[1], k[3]) for k in best}
        for net, factor, device in sorted(slots):
            if device != "cpu" and (net, factor, "cpu") in slots:
                continue
            ht2, tucker = (
                best.get((net, factor, "ht2", device)),
                best.get((net, factor, "tucker2", device)),
            )
            if ht2 is None or tucker is None:
                continue
            lines.append(
                [
                    net_name(net),
                    f"{factor:g}x",
                    stage + (" (GPU)" if device != "cpu" else ""),
                    f"{num(ht2[key])} ({ht2['allocation']})",
                    f"{num(tucker[key])} ({tucker['allocation']})",
                    num(ht2[key] - tucker[key], sign=True),
                ]
            )
    body = "\n\n".join(
        [
            "From the allocation runs above (paper's one-pass factors): at each size and stage, "
            "the best allocation of HT-2 against the best of Tucker-2, top-1 (%). With "
            "`--refine-sweeps 10` see *Refined factors*.",
            table(
                ["net", "size", "stage", "HT-2 best", "Tucker-2 best", "HT-2 ahead by"],
                lines,
                "lllrrr",
            ),
        ]
    )
    return Section("HT-2 against Tucker-2: best allocation each", body)


SECTIONS = [compare_section, tucker_section]
