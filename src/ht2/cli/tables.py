"""Plain-text and Markdown tables for reports (presentation only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ht2.choices import layout_name
from ht2.layers.registry import sweeps_refine

if TYPE_CHECKING:
    from ht2.surgery import CompressionReport, LayerReport

MAX_REASONS = 6


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """Columns padded to their widest cell; numbers right-aligned. Markdown pipes on request."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    numeric = [all(_looks_numeric(r[i]) for r in rows) and bool(rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True)
        ]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded).rstrip()

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if n else ("-" * (w + 2))
            for w, n in zip(widths, numeric, strict=True)
        )
        + "|"
        if markdown
        else "  ".join("-" * w for w in widths)
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _looks_numeric(cell: str) -> bool:
    stripped = cell.replace(",", "").replace("x", "").replace("%", "").replace(".", "").strip()
    return stripped.isdigit() or cell.strip() in {"", "-"}


def _ranks(ranks: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in ranks.items()) if ranks else "-"


def _energy(value: float | None, method: str) -> str:
    return "-" if value is None or method == "dense" else f"{value:.3f}"


def _method(layer: LayerReport) -> str:
    """The method, or METHOD->dense for a layer decomposed and then run dense for speed."""
    if layer.form == "dense" and layer.method != "dense":
        return f"{layer.method}->dense"
    return layer.method


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _calib(errors: dict[str, float] | None) -> str:
    """The output error on calibration images before the first fitting step and after the
    last ("plain" factors, or the layer as it was when it stayed dense)."""
    if not errors:
        return "-"
    steps = [value for key, value in errors.items() if key != "dense"]
    first = errors.get("plain", errors.get("dense"))
    return f"{first:.3f} -> {steps[-1]:.3f}" if steps and first is not None else "-"


def report_table(report: CompressionReport, markdown: bool = False) -> str:
    """Per-layer lines (name, method, ranks, params, MACs, error) and the totals."""
    energies = {layer.energy for layer in report.replaced if layer.energy is not None}
    with_energy = len(energies) > 1  # per-layer energies (an allocation): show them
    with_calib = any(layer.calib_errors for layer in report.layers)
    with_form = any(layer.form for layer in report.layers)
    headers = [
        "layer",
        "method",
        *(["form"] if with_form else []),
        "ranks",
        *(["energy"] if with_energy else []),
        "params",
        "params after",
        "MACs",
        "MACs after",
        "rel err",
        *(["calib err"] if with_calib else []),
    ]
    rows = [
        [
            layer.name,
            _method(layer),
            *([layer.form or "-"] if with_form else []),
            _ranks(layer.ranks),
            *([_energy(layer.energy, layer.method)] if with_energy else []),
            _count(layer.params_before),
            _count(layer.params_after),
            _count(layer.macs_before),
            _count(layer.macs_after),
            "-" if layer.rel_error is None else f"{layer.rel_error:.4f}",
            *([_calib(layer.calib_errors)] if with_calib else []),
        ]
        for layer in report.layers
    ]
    lines = [render(headers, rows, markdown), "", summary(report), *latency_notes(report)]
    lines += rank_notes(report)
    lines += data_aware_notes(report)
    dense = [layer for layer in report.layers if layer.method == "dense" and layer.reason]
    for layer in dense[:MAX_REASONS]:
        lines.append(f"left dense: {layer.name}: {layer.reason}")
    if len(dense) > MAX_REASONS:
        lines.append(f"left dense: {len(dense) - MAX_REASONS} more layers (see report.json)")
    if any("not fewer than" in layer.reason for layer in dense):
        lines.append("(--no-keep-if-larger factorizes layers even where that does not shrink them)")
    return "\n".join(lines)


def latency_notes(report: CompressionReport) -> list[str]:
    """How --latency-aware timed the forms, and the size any dense layer gave back."""
    aware = report.latency_aware
    if not aware:
        return []
    counts = ", ".join(f"{count} {form}" for form, count in aware["forms"].items())
    layout = layout_name(aware["memory_format"])
    notes = [
        f"latency-aware forms ({counts}) timed on {aware['device']} at batch "
        f"{aware['batch_size']}, {aware['dtype']}, {layout}, {aware['runtime']}; "
        + ("--allow-dense" if aware["allow_dense"] else "size kept (no --allow-dense)")
    ]
    dense = len(aware["kept_dense"])
    macs_factors = aware["macs_after_factors"]
    changed = report.params_after != aware["params_after_factors"] or (
        macs_factors is not None and report.macs_after != macs_factors
    )
    if not (dense or changed):
        return notes
    if dense:
        lead = f"{dense} of {aware['layers']} layers kept dense for speed"
    elif report.params_after > aware["params_after_factors"]:
        lead = "larger forms kept for speed"
    else:
        lead = "the forms kept also changed the size"
    text = (
        f"{lead}; params {report.param_reduction:.2f}x instead of "
        f"{aware['param_reduction_factors']:.2f}x"
    )
    if report.mac_reduction is not None and aware["mac_reduction_factors"] is not None:
        text += (
            f", MACs {report.mac_reduction:.2f}x instead of {aware['mac_reduction_factors']:.2f}x"
        )
    notes.append(text)
    return notes


def rank_notes(report: CompressionReport) -> list[str]:
    """How the ranks were chosen, where that was not the plain energy rule."""
    notes = []
    allocation = (report.target or {}).get("allocation", "uniform")
    if report.target and "reached" not in report.target:  # as asked, by a planner
        notes.append(f"target {report.target['factor']:g}x fewer {report.target['kind']}")
    elif report.target:
        target = report.target
        how = (
            f"at energy {target['energy']:.4f}"
            if allocation == "uniform"
            else f"by the {allocation} allocation"
        )
        notes.append(
            f"target {target['factor']:g}x fewer {target['kind']}: reached "
            f"{target['reached']:.3f}x {how}" + ("" if target["met"] else f" ({target['note']})")
        )
        after_forms = target.get("reached_after_forms")
        if after_forms is not None and abs(after_forms - target["reached"]) > 1e-9:
            notes.append(
                f"latency-aware forms then traded size for speed: {after_forms:.3f}x fewer "
                f"{target['kind']} in the end"
            )
    speed = (report.provenance or {}).get("speed_target")
    if speed:
        notes.append(speed_note(speed))
        notes += low_energy_note(report)
    elif report.rank_rule != "energy" and allocation == "uniform":
        notes.append(f"rank rule: {report.rank_rule}")
    auto = (report.provenance or {}).get("round_ranks_auto")
    if auto:
        timed = ", ".join(f"{m}: {ms:.3f}" for m, ms in auto["layers_ms"].items())
        notes.append(
            f"--round-ranks auto: the planned layers took (ms, summed, by multiple) {timed} "
            f"on {auto['device']} at batch {auto['batch_size']}, {auto['dtype']}; "
            f"chose {auto['chosen']}"
        )
    if report.round_ranks > 1:
        extra = report.rounding_params or 0
        share = 100 * extra / max(report.params_after - extra, 1)
        notes.append(
            f"ranks rounded up to multiples of {report.round_ranks}: "
            f"+{extra:,} parameters (+{share:.1f} %)"
        )
    if report.refine_sweeps and sweeps_refine(report.method):
        notes.append(
            f"factors refined by {report.refine_sweeps} ALS/HOOI sweeps (HT-2, Tucker-2 layers)"
        )
    return notes


def speed_note(speed: dict) -> str:
    """What a speed target reached, timed where; out of reach or slower than the original
    said plainly."""
    layout = layout_name(speed.get("memory_format"))
    where = (
        f"{speed['device']}, batch {speed['batch_size']}, {speed['dtype']}, {layout}, "
        f"{speed['runtime']}, BatchNorms folded on both sides"
    )
    text = f"speed target {speed['factor']:g}x ({where}): reached {speed['reached']:.2f}x"
    if not speed["met"]:
        text += f" ({speed['note']})"
    if speed["reached"] < 1:
        text += "; this model runs slower than the original here: factors do not pay on this target"
    return text


def low_energy_note(report: CompressionReport) -> list[str]:
    """Under a speed target, how many layers kept less than half their energy: the accuracy
    that speed cost, said before anyone measures it."""
    energies = [line.energy for line in report.layers if line.energy is not None]
    low = [e for e in energies if e < 0.5]
    if not low:
        return []
    return [
        f"{len(low)} of {len(energies)} factorized layers keep less than half of their "
        f"spectral energy (lowest e={min(low):g}): expect a large accuracy drop until the model "
        "is fine-tuned; measure it with `ht2 evaluate`"
    ]


def data_aware_notes(report: CompressionReport) -> list[str]:
    """What the data-aware fit did: images, the held-out gap to the original, BN decision."""
    summary = report.data_aware
    if not summary:
        return []
    text = f"data-aware ({summary['options']['mode']}) on {summary['images']} images"
    gap = summary.get("gap")
    if gap:
        text += (
            f"; output gap to the original on {summary['held_out']} held-out images: "
            f"{gap['plain']:.4f} plain -> {gap['data_aware']:.4f}"
        )
    text += "; BatchNorm re-estimated" if summary.get("bn_calibration") else ""
    notes = [
        text,
        *_block_notes(summary.get("blocks") or {}),
        "(calib err: relative output error on the calibration images, before -> after)",
    ]
    notes += [f"note: {name}: {note}" for name, note in summary.get("notes", {}).items()]
    return notes


def _block_notes(blocks: dict) -> list[str]:
    """One line on the block fit: how many blocks kept it, and their held-out output errors."""
    if not blocks:
        return []
    kept = [name for name, result in blocks.items() if result["kept"]]
    before = sum(result["before"] for result in blocks.values()) / len(blocks)
    after = sum(
        result["after"] if result["kept"] else result["before"] for result in blocks.values()
    ) / len(blocks)
    return [
        f"block fit kept in {len(kept)} of {len(blocks)} blocks; mean relative output error "
        f"of a block on the held-out images {before:.4f} -> {after:.4f}"
    ]


def _setting(report: CompressionReport) -> str:
    """e=ENERGY, the rank rule, or the allocation that chose per-layer energies or ranks."""
    target = report.target or {}
    allocation = target.get("allocation", "uniform")
    speed = (report.provenance or {}).get("speed_target")
    if speed:
        return f"ranks timed for {speed['factor']:g}x faster"
    if allocation != "uniform":
        return f"{allocation} allocation for {target['factor']:g}x fewer {target['kind']}"
    return f"e={report.energy:.4g}" if report.energy is not None else report.rank_rule


def summary(report: CompressionReport) -> str:
    """One line of totals with the reduction factors."""
    rule = _setting(report)
    text = (
        f"{report.model} {report.method} {rule}: {len(report.replaced)} of "
        f"{len(report.layers)} layers replaced; params {report.params_before:,} -> "
        f"{report.params_after:,} ({report.param_reduction:.2f}x fewer)"
    )
    if report.mac_reduction is not None:
        text += (
            f"; MACs {report.macs_before:,} -> {report.macs_after:,} "
            f"({report.mac_reduction:.2f}x fewer)"
        )
    return text + f"; {report.seconds:.2f} s"
