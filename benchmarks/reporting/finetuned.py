"""After training: the bundled weights, the CPU fine-tuning runs, one epoch after each rank
allocation, and the paper's table as the background job fills it."""

from __future__ import annotations

from typing import Any

from .accuracy import allocation_commands, allocation_rows, pivot
from .base import (
    EPOCH0_NOTE,
    TABLE_BATCH,
    TABLE_OWN,
    Results,
    Section,
    command,
    fine_tune_of,
    grouped,
    method_name,
    model_key,
    net_name,
    num,
    span,
    table,
    target_cell,
    times,
    variant_flags,
    variant_of,
    variant_order,
    variant_phrase,
)


def finetune_section(results: Results) -> Section | None:
    data = results.json("finetune-cifar10_resnet20-e0.7.json")
    if data is None:
        return None
    runs = data["runs"]
    epochs = max(r["epochs"] for r in runs.values())
    lines = [
        [f"{key} ({run['kind']}, {run['epochs']} epoch{'s' if run['epochs'] > 1 else ''})"]
        + [
            num(run["top1_by_epoch"].get(str(e))) if str(e) in run["top1_by_epoch"] else ""
            for e in range(epochs + 1)
        ]
        for key, run in runs.items()
    ]
    seconds = [s for run in runs.values() for s in run["seconds_per_epoch"]]
    body = "\n\n".join(
        [
            command(
                f"python benchmarks/finetune.py --data DATA --runs {','.join(runs)}"
                f"    # writes benchmarks/results/finetune-{data['net']}-e{data['energy']:g}.json"
            ),
            f"{net_name(data['net'])}, shared weights, HT-2 at e = {data['energy']:g} "
            f"({times(data['param_reduction'])} fewer parameters). Each run is `ht2 finetune` of "
            "its "
            f"own ({data['recipe']}, {data['torch_threads']} threads), after BatchNorm calibration "
            "on 2,048 training images (epoch 0: calibrated, before any step). compressed + distill "
            "uses the uncompressed model as teacher; uncompressed is the original fine-tuned with "
            "the same recipe (training on the JPEG train/ folder lifts it on the JPEG test/ folder "
            "too, so it is the like-for-like baseline).",
            table(
                ["run", *(f"epoch {e}" if e == 0 else str(e) for e in range(epochs + 1))],
                lines,
                "l" + "r" * (epochs + 1),
            ),
            f"Seconds per epoch (50,000 images) ranged {span(seconds, 0)} s, depending on what "
            "else loaded the machine; the JSON has every epoch's time.",
        ]
    )
    return Section("After fine-tuning: CPU runs", body)


def _epoch(row: dict[str, Any]) -> str:
    value = row.get("finetuned_1")
    return num(value) if value is not None else "-"


def one_epoch_section(results: Results) -> Section | None:
    rows = [
        r
        for r in allocation_rows(results, "allocation-*.json")
        if r.get("finetuned_1") is not None and r["settings"].get("device") == "cpu"
    ]
    if not rows:
        return None
    parts = [
        allocation_commands(results, sorted({r["file"] for r in rows})),
        "Top-1 (%) after one epoch of `ht2 finetune` (which calibrates BatchNorm first) of each "
        "allocation, one CPU thread, shared weights. The same rows before training are in the "
        "allocation table above; the ResNet-20 4x column was run on a GPU (see *On a GPU*).",
    ]
    for net in sorted({r["net"] for r in rows}):
        mine = [r for r in rows if r["net"] == net]
        factors = sorted({r["factor"] for r in mine})
        parts += [
            f"{net_name(net)} (base {num(mine[0]['base'])} %):",
            table(
                ["method, allocation", *(f"{f:g}x, 1 epoch" for f in factors)],
                pivot(mine, factors, _epoch),
                "l" + "r" * len(factors),
            ),
        ]
    return Section("After fine-tuning: one epoch per allocation", "\n\n".join(parts))


PIPELINE_ORDER = {"base": 0, "paper": 1, "best": 2, "prune": 3, "speed": 4}


def paper_section(results: Results) -> Section:
    data = results.json("paper_table.json")
    rows = (data or {}).get("rows", [])
    threads = sorted({r["settings"].get("threads") for r in rows if r.get("settings")} - {None})
    workers = sorted({r["settings"].get("workers") for r in rows if r.get("settings")} - {None})
    flags = "".join(f" --threads {n}" for n in threads[:1]) + "".join(
        f" --workers {n}" for n in workers[:1]
    )
    parts = [
        command("\n".join(_table_commands(rows, flags))),
        "Each size compressed by the paper's pipeline (one energy, no data) and by the best one "
        "(`--recipe best`), rival decompositions and channel pruning (`ht2 prune`) beside them, "
        "every model fine-tuned for the same number of "
        "epochs, against the base model fine-tuned the same way. A background job fills "
        "`benchmarks/results/paper_table.json` row by row. Top-1 after is the last epoch's; "
        "minutes are wall time on this shared 2-core machine, including what other jobs took "
        "from it. Speed rows (`--speed X`): HT-2 compressed by `ht2 compress --target-speedup "
        "X` for the runtime, dtype and batch size the row names, then fine-tuned the same way. "
        "`--lr X` fine-tunes the rows it picks (a base row among them) at peak learning rate X "
        "instead of the recipe's, and `--batch-size B` with B images a step instead of "
        f"{TABLE_BATCH}, in a table of their own. " + EPOCH0_NOTE,
    ]
    if not rows:
        parts.append("No rows yet.")
        return Section("After fine-tuning: the paper's table", "\n\n".join(parts))
    speeds, sizes = _row_speeds(results.json("paper_table_speed.json"))
    for net, epochs, variant in sorted({fine_tune_of(r) for r in rows}, key=_fine_tune_order):
        mine = sorted(
            (r for r in rows if fine_tune_of(r) == (net, epochs, variant)),
            key=lambda r: (
                r["pipeline"] == "speed",  # last: their target is a speedup, not a size
                r["target"],
                PIPELINE_ORDER.get(r["pipeline"], 9),
                r["method"],
            ),
        )
        header = ["pipeline", "method", "target", "params x", "MACs x", "top-1 before"]
        header += [f"top-1 after {epochs} ep", "delta vs base", "minutes"]
        header += [f"faster, batch {size}" for size in sizes]
        lines = [
            [
                r["pipeline"],
                method_name(r["method"]),
                target_cell(r),
                times(r["params_x"]),
                times(r["macs_x"]),
                num(r["top1_before"]),
                num(r["top1_after"]),
                num(r.get("delta"), sign=True),
                num(r["minutes"], 1),
            ]
            + [_speed_cell(r, speeds, size) for size in sizes]
            for r in mine
        ]
        parts += [
            f"{net_name(net)}, {epochs} epochs of fine-tuning{variant_phrase(variant)}:",
            table(header, lines, "ll" + "r" * (len(header) - 2)),
        ]
    if sizes:
        parts.append(_speed_note(results.json("paper_table_speed.json")))
    return Section("After fine-tuning: the paper's table", "\n\n".join(parts))


def _table_commands(rows: list[dict[str, Any]], flags: str) -> list[str]:
    """The paper_table.py commands that ran these rows: the table with its own fine-tune
    settings (with its speed rows' --speed), then one per variant (--lr, --batch-size), naming
    the rows it ran."""
    speeds = sorted(
        {r["target"] for r in rows if r["pipeline"] == "speed" and variant_of(r) == TABLE_OWN}
    )
    speed = f" --speed {','.join(f'{x:g}' for x in speeds)}" if speeds else ""
    run = f"python benchmarks/paper_table.py --data DATA{flags}"
    lines = [f"nohup {run}{speed} > paper_table.log 2>&1 &"]
    for variant in sorted({variant_of(r) for r in rows} - {TABLE_OWN}, key=variant_order):
        picked = sorted(
            {
                f"*/{r['pipeline']}/{r['method']}/{r['target']:g}x/*"
                for r in rows
                if variant_of(r) == variant
            }
        )
        tuned = variant_flags(variant)
        lines.append(f"nohup {run}{tuned} --rows '{','.join(picked)}' > variant.log 2>&1 &")
    return lines


def _fine_tune_order(group: tuple) -> tuple:
    net, epochs, variant = group
    return net, epochs, variant_order(variant)


def _row_speeds(data: Any) -> tuple[dict[str, dict[int, float]], list[int]]:
    """Best-against-best speedups by row key and batch size (table_speed.py), and the sizes."""
    speeds: dict[str, dict[int, float]] = {}
    for entry in (data or {}).get("rows", []):
        speeds[entry["key"]] = {
            best["batch_size"]: best["best_against_best"]["speedup"] for best in entry["best"]
        }
    sizes = sorted({size for by_size in speeds.values() for size in by_size})
    return speeds, sizes


def _speed_cell(row: dict[str, Any], speeds: dict[str, dict[int, float]], size: int) -> str:
    if row["pipeline"] == "base":
        return "1.00x"
    speedup = speeds.get(model_key(row), {}).get(size)
    return "-" if speedup is None else times(speedup)


def _speed_note(data: dict[str, Any]) -> str:
    settings = {_timing_phrase(entry["settings"]) for entry in data["rows"]}
    loads = [value for entry in data["rows"] for value in entry.get("load", [])]
    load = f", load average {min(loads):.2f} to {max(loads):.2f}" if loads else ""
    return (
        f"Faster: `{data['command']}` ({'; '.join(sorted(settings))}{load}). Each row's "
        "model (as compressed or pruned; fine-tuning changes its weights, not its speed) and "
        "the base network ran in every treatment (dtype x memory format x runtime, BatchNorms "
        "folded on both sides), run by run in turn in one process; the figure is the best "
        "against the best: each in its own fastest treatment. '-': not timed yet. A batch-1 "
        "run of these models takes 2-10 ms, as long as a scheduler time slice on a machine "
        "this loaded: repeated runs of the same pair can differ by 2x at batch 1, so read "
        "that column as a rough sign only; batch 128 is steadier."
    )


def _timing_phrase(settings: dict[str, Any]) -> str:
    """A row's timing settings as one phrase."""
    return (
        f"runtimes {settings.get('runtimes')}, {settings.get('threads')} thread(s), "
        f"medians of {settings.get('repeats')} runs after {settings.get('warmup')} warm-up"
    )


def bundled_section(results: Results) -> Section | None:
    data = results.json("bundled.json")
    if data is None:
        return None
    rows = []
    for r in data["nets"]:
        epochs = r.get("epochs") or []
        picks = sorted(
            {0, len(epochs) // 4, len(epochs) // 2, 3 * len(epochs) // 4, len(epochs) - 1}
        )
        history = ", ".join(
            f"{epochs[i]['top1']:.2f} after {epochs[i]['epoch']}" for i in picks if epochs
        )
        rows.append(
            [
                net_name(r["net"]),
                grouped(r["params"]),
                grouped(r["macs"]),
                num(r["top1"]),
                num(r["top5"]),
                f"{len(epochs)}, {span([e['seconds'] for e in epochs], 0)} s each"
                if epochs
                else "-",
                history or "-",
            ]
        )
    body = "\n\n".join(
        [
            command(
                "python benchmarks/bundled.py --data DATA "
                "--train-log cifar10_resnet56=RUN/log.jsonl"
            ),
            "The CIFAR-10 weights that ship in the package (`ht2 compress NET --pretrained`), "
            "each trained by `ht2 train NET --data DATA --recipe resnet-cifar10` on the JPEG "
            "train/ folder on this CPU; top-1 and top-5 (%) by `ht2 evaluate NET --pretrained` on "
            "the JPEG test/ folder. Epoch figures come from the training run's log.jsonl where it "
            "was kept (the ResNet-20 run's was not; docs/notes.md has its history); the seconds "
            "depend on what else ran on the machine and on the threads given, which "
            "docs/notes.md tells for each run. `ht2 train` keeps the best epoch.",
            table(
                ["net", "params", "MACs", "top-1", "top-5", "epochs", "top-1 during training"],
                rows,
                "lrrrrll",
            ),
        ]
    )
    return Section("Bundled weights", body)


SECTIONS = [bundled_section, finetune_section, one_epoch_section, paper_section]
