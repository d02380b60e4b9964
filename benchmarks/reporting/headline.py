"""The headline: for each model and size, the best figure at each stage (no data, BatchNorm
calibration, data-aware fit, fine-tuning) with the pipeline that gave it, and HT-2's latency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .accuracy import allocation_rows, bn_augmented, pipeline, refit_name
from .base import Results, Section, method_name, net_name, num, table, times, variant_of

STAGES = ("zero-shot", "calibrated", "data-aware", "fine-tuned")
TOLERANCE = 1.03  # sizes within 3 % of each other share a row


@dataclass(frozen=True)
class Figure:
    """One measured top-1 of one pipeline at one size and stage."""

    net: str
    size: float  # parameter reduction, measured or asked for
    nominal: bool  # size is the target asked for (else measured)
    stage: str
    top1: float
    label: str


def _allocation(results: Results) -> list[Figure]:
    found = []
    for r in allocation_rows(results, "allocation-*.json"):
        label = pipeline(r) + (" [GPU]" if r["settings"].get("device") != "cpu" else "")
        for stage, key, extra in (
            ("zero-shot", "zero_shot", ""),
            ("calibrated", "bn_calibrated", ", augmented calibration" if bn_augmented(r) else ""),
            ("data-aware", "data_aware", ", " + refit_name(r)),
            ("fine-tuned", "finetuned_1", ", 1 epoch"),
        ):
            if r.get(key) is not None:
                found.append(Figure(r["net"], r["factor"], True, stage, r[key], label + extra))
    return found


def _compare(results: Results) -> list[Figure]:
    found = []
    for name in results.names("compare-*/compare.json"):
        data = results.json(name)
        for r in data["rows"]:
            label = f"{method_name(r['method'])} uniform"
            found.append(
                Figure(data["model"], r["target_factor"], True, "zero-shot", r["top1"], label)
            )
            found.append(
                Figure(
                    data["model"],
                    r["target_factor"],
                    True,
                    "calibrated",
                    r["top1_calibrated"],
                    label,
                )
            )
    return found


def _zeroshot(results: Results) -> list[Figure]:
    found = []
    stages = {
        "bn": "calibrated",
        "whiten": "data-aware",
        "refit": "data-aware",
        "both": "data-aware",
    }
    for name in results.names("zeroshot-*.json"):
        data = results.json(name)
        for key, run in data["runs"].items():
            parts = key.split("/")
            if len(parts) == 2:
                found.append(
                    Figure(
                        data["net"],
                        run["x"],
                        False,
                        "zero-shot",
                        run["top1"],
                        f"HT-2 uniform e = {parts[0]}",
                    )
                )
            elif len(parts) == 3:
                extra = "" if parts[2] == "bn" else f", {parts[2]}"
                found.append(
                    Figure(
                        data["net"],
                        run["x"],
                        False,
                        stages[parts[2]],
                        run["top1"],
                        f"HT-2 uniform e = {parts[0]}{extra}, {parts[1]} images",
                    )
                )
    return found


def _finetuned(results: Results) -> list[Figure]:
    found = []
    data = results.json("finetune-cifar10_resnet20-e0.7.json")
    if data is not None:
        for key, run in data["runs"].items():
            if run["kind"] == "uncompressed":
                continue
            last = str(run["epochs"])
            found.append(
                Figure(
                    data["net"],
                    data["param_reduction"],
                    False,
                    "fine-tuned",
                    run["top1_by_epoch"][last],
                    f"HT-2 uniform e = {data['energy']:g}, {run['kind']}, {last} epochs ({key})",
                )
            )
    table_data = results.json("paper_table.json") or {}
    for r in table_data.get("rows", []):
        if r["pipeline"] != "base":
            found.append(
                Figure(
                    r["net"],
                    r["params_x"],
                    False,
                    "fine-tuned",
                    r["top1_after"],
                    f"{method_name(r['method'])} {r['pipeline']} pipeline, "
                    f"{r['epochs']} epochs{_tuned(r)} (paper table)",
                )
            )
    return found


def _tuned(row: dict[str, Any]) -> str:
    lr, batch, ema = variant_of(row)
    return (
        ("" if lr is None else f" at peak lr {lr:g}")
        + ("" if batch is None else f", batch {batch}")
        + ("" if ema is None else f", weight average (ema {ema:g})")
    )


def clusters(sizes: list[float]) -> list[list[float]]:
    """Sizes grouped so that each group spans at most TOLERANCE from its smallest."""
    groups: list[list[float]] = []
    for size in sorted(sizes):
        if groups and size <= groups[-1][0] * TOLERANCE:
            groups[-1].append(size)
        else:
            groups.append([size])
    return groups


def _latency(results: Results) -> list[tuple[str, float, str]]:
    """(net, size, 'b1 / b128 (how)') for HT-2, latency-aware runs first (quiet before loaded),
    then the compare runs' four-conv factors."""
    sizes = {
        (r["model"], r["energy"]): r["param_reduction"]
        for r in (results.json("compression_sizes.json") or {"sizes": []})["sizes"]
    }
    found = []
    for name, how in (
        ("latency_aware_speed-resnet20-quiet.json", "latency-aware, quiet"),
        ("latency_aware_speed.json", "latency-aware, loaded"),
    ):
        rows = (results.json(name) or {"rows": []})["rows"]
        for model, energy in sorted({(r["model"], r["energy"]) for r in rows}):
            speed = {
                r["batch"]: r["speedup_latency_aware"]
                for r in rows
                if (r["model"], r["energy"]) == (model, energy)
            }
            if (model, energy) in sizes:
                found.append(
                    (
                        model,
                        sizes[(model, energy)],
                        f"{times(speed.get(1))} / {times(speed.get(128))} ({how})",
                    )
                )
    for name in results.names("compare-*/compare.json"):
        data = results.json(name)
        for r in data["rows"]:
            if r["method"] == "ht2":
                found.append(
                    (
                        data["model"],
                        r["target_factor"],
                        f"{times(r['speedup'].get('1'))} / {times(r['speedup'].get('128'))}"
                        " (four-conv, loaded)",
                    )
                )
    return found


def _cell(figures: list[Figure]) -> str:
    if not figures:
        return "-"
    best = max(figures, key=lambda f: f.top1)
    return f"**{num(best.top1)}** {best.label}"


def headline_section(results: Results) -> Section | None:
    figures = _allocation(results) + _compare(results) + _zeroshot(results) + _finetuned(results)
    if not figures:
        return None
    latency = _latency(results)
    lines = []
    for net in sorted({f.net for f in figures}):
        mine = [f for f in figures if f.net == net]
        for group in clusters([f.size for f in mine]):
            low, high = group[0], group[-1]
            here = [f for f in mine if low <= f.size <= high]
            named = sorted({f.size for f in here if f.nominal})
            label = f"{named[0]:g}x" if named else f"{low:.2f}x"
            speed = [
                text
                for model, size, text in latency
                if model == net and low / TOLERANCE <= size <= high * TOLERANCE
            ]
            lines.append(
                [net_name(net), label]
                + [_cell([f for f in here if f.stage == s]) for s in STAGES]
                + [speed[0] if speed else "-"]
            )
    body = "\n\n".join(
        [
            "For each model and size (parameter reduction; sizes within 3 % share a row), the best "
            "top-1 (%) measured at each stage, with the method and pipeline that gave it: "
            "zero-shot (no data), after BatchNorm calibration, after the data-aware fit (training "
            "images, no gradient step), and after fine-tuning (epochs named). The last column is "
            "HT-2's speed-up over the original at batch 1 / batch 128 at that size, timed "
            "alternately on this CPU (one thread). Each figure comes from the sections below, "
            "which name the command and the JSON; [GPU] marks a figure measured on the H100.",
            table(["model", "size", *STAGES, "HT-2 latency x, b1 / b128"], lines, "lr"),
        ]
    )
    return Section("Headline: best figure per model and size", body)


SECTIONS = [headline_section]
