"""How accurate without training: energy sweeps, BatchNorm calibration, the data-aware fit and
the rank allocations, all before any gradient step."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from .base import Results, Section, command, method_name, net_name, num, table, times

SWEEP_COMMAND = (
    "ht2 sweep {net} --weights ../shared/weights/{weights} --data DATA --threads 1 --repeats 10 "
    "--out benchmarks/results/{folder}"
)
STAGES = ("plain", "bn", "whiten", "refit", "both")
LAYER_ERRORS = {
    "dense": "original layer on compressed inputs",
    "plain": "plain factors",
    "whiten": "whitened",
    "refit_last": "refit last",
    "refit_all": "refit all",
}


def sweep_section(results: Results) -> Section | None:
    sweeps = [(name, results.json(name)) for name in results.names("sweep-*/sweep.json")]
    if not sweeps:
        return None
    commands = [
        SWEEP_COMMAND.format(
            net=d["model"], weights=d["weights"].rsplit("/", 1)[-1], folder=name.split("/")[0]
        )
        for name, d in sweeps
    ]
    parts = [
        command(*commands),
        "DATA is the extracted JPEG tree (`--data ../shared/data/cifar10-jpeg.tar.gz` works as "
        "well); the Pareto plots sit beside each sweep.json. Top-1 on the 10,000 JPEG test "
        "images; latency x is the original's median time over the compressed model's "
        "(alternating runs, 1 thread), measured while a fine-tuning job ran on the other core, "
        "so the latency columns are noisy.",
    ]
    for _, data in sweeps:
        parts += [
            f"{net_name(data['model'])} (original {num(data['original']['top1'])} %):",
            table(
                ["e", "params x", "MACs x", "top-1 %", "delta", "latency x b1", "latency x b128"],
                [
                    [
                        f"{r['energy']:g}",
                        times(r["param_reduction"]),
                        times(r["mac_reduction"]),
                        num(r["top1"]),
                        num(r["delta_top1"]),
                        times(r["speedup"].get("1")),
                        times(r["speedup"].get("128")),
                    ]
                    for r in data["rows"]
                ],
                "lrrrrrr",
            ),
        ]
    parts.append(
        "As in the paper's method, the weight-space factors alone lose most of the accuracy; "
        "what recovers it is below."
    )
    return Section("Zero-shot accuracy: energy sweeps (no data, no training)", "\n\n".join(parts))


def _zeroshot_rows(runs: dict[str, Any]) -> list[list[str]]:
    """One row per (energy, calibration images): each stage's top-1 and the seconds of 'both'."""
    keys = [k.split("/") for k in runs if k.count("/") == 2]
    energies = sorted({k[0] for k in keys}, key=float, reverse=True)
    rows = []
    for energy in energies:
        for images in sorted({k[1] for k in keys if k[0] == energy}, key=int):
            stage = {s: runs.get(f"{energy}/{images}/{s}") for s in STAGES[1:]}
            plain = runs[f"{energy}/plain"]
            rows.append(
                [energy, times(plain["x"]), images, num(plain["top1"])]
                + [num(stage[s]["top1"]) if stage[s] else "-" for s in STAGES[1:]]
                + [num(stage["both"]["seconds"], 1) if stage["both"] else "-"]
            )
    return rows


def zeroshot_section(results: Results) -> Section | None:
    files = [(n, results.json(n)) for n in results.names("zeroshot-*.json")]
    if not files:
        return None
    parts = [
        command(
            *(
                f"python benchmarks/zeroshot.py --data DATA --nets {d['net']} --threads 1 --resume"
                for _, d in files
            )
        ),
        "HT-2 at one energy for every layer, shared weights; top-1 (%) on the 10,000 JPEG test "
        "images after compressing with N training images and no gradient step: plain factors, "
        "plain + BatchNorm re-estimation, whitened factors, the data-aware refit, and whitening "
        "with the refit (both). 's (both)' is the seconds of the 'both' call on one CPU thread "
        "while other jobs shared the machine, so the seconds are loose.",
    ]
    for name, data in files:
        parts += [
            f"{net_name(data['net'])} (base {num(data['runs']['original']['top1'])} %; "
            f"`benchmarks/results/{name}`):",
            table(
                [
                    "e",
                    "params x",
                    "N",
                    "plain",
                    "plain + BN",
                    "whiten",
                    "refit",
                    "both",
                    "s (both)",
                ],
                _zeroshot_rows(data["runs"]),
                "lrrrrrrrr",
            ),
        ]
    errors = _layer_errors(files[0][1], "0.8/512/both")
    if errors:
        parts += [
            "Relative output error per layer on the calibration images "
            f"({net_name(files[0][1]['net'])}, e = 0.8, N = 512, the 'both' run): what is lost "
            "upstream cannot be put back downstream, since the original layer fed the compressed "
            "network's inputs is already far off deep in the network.",
            errors,
        ]
    return Section(
        "Zero-shot accuracy with data: BatchNorm calibration and the data-aware fit",
        "\n\n".join(parts),
    )


def _layer_errors(data: dict[str, Any], run: str) -> str | None:
    errors = data["runs"].get(run, {}).get("calib_errors")
    if not errors:
        return None
    names = ["layer1.0.conv1", "layer2.2.conv2", "layer3.2.conv2", "linear"]
    columns = [c for c in LAYER_ERRORS if all(c in errors.get(n, {}) for n in names)]
    return table(
        ["layer", *(LAYER_ERRORS[c] for c in columns)],
        [[n, *(num(errors[n][c]) for c in columns)] for n in names if n in errors],
        "l" + "r" * len(columns),
    )


def calibration_section(results: Results) -> Section | None:
    data = results.json("zeroshot-cifar10_resnet20.json")
    if data is None or "0.9/2048/bn" not in data["runs"]:
        return None
    runs = data["runs"]
    weights = "--weights ../shared/weights/resnet20-12fca82f.th"
    body = "\n\n".join(
        [
            command(
                f"ht2 evaluate cifar10_resnet20 {weights} --data DATA --json"
                f"    # top1 {num(runs['original']['top1'])}",
                f"ht2 compress cifar10_resnet20 {weights} --energy 0.9 --no-keep-if-larger "
                "--out R20",
                f"ht2 evaluate R20 --data DATA --json    # top1 {num(runs['0.9/plain']['top1'])}",
                "ht2 calibrate R20 --data DATA --images 2048 --evaluate --out R20-cal"
                f"    # {num(runs['0.9/plain']['top1'])} % -> {num(runs['0.9/2048/bn']['top1'])} %",
            ),
            "The figures in the comments are the zero-shot JSON's (`original`, `0.9/plain`, "
            "`0.9/2048/bn`), which runs the same steps.",
        ]
    )
    return Section("Evaluation and BatchNorm calibration", body)


def allocation_rows(results: Results, pattern: str) -> list[dict[str, Any]]:
    """Every allocation row of the files matching `pattern`, each with its file's settings."""
    rows = []
    for name in results.names(pattern):
        data = results.json(name)
        for row in data["rows"]:
            rows.append(
                {
                    **row,
                    "file": name,
                    "settings": data["settings"],
                    "base": data["baseline"].get(row["net"]),
                }
            )
    return rows


def pipeline(row: dict[str, Any]) -> str:
    """'HT-2 sensitivity', with the options that set the row apart."""
    text = f"{method_name(row['method'])} {row['allocation']}"
    settings = row.get("settings", {})
    if settings.get("refine_sweeps", "0") not in ("0", "None"):
        text += f", {settings['refine_sweeps']} sweeps"
    if row["allocation"] == "sensitivity" and settings.get("calib_images", "256") != "256":
        text += f" ({settings['calib_images']} images)"
    return text


def bn_augmented(row: dict[str, Any]) -> bool:
    """Whether a row's BN-cal images got the training augmentation (`--bn-augment`)."""
    return row.get("settings", {}).get("bn_augment") == "True"


def refit_name(row: dict[str, Any]) -> str:
    """How a row's data-aware fit ran: 'refit', or 'refit + block fit' (`--refit blocks`)."""
    return "refit + block fit" if row.get("settings", {}).get("refit") == "blocks" else "refit"


DEFAULTS = {
    "nets": "['cifar10_resnet20']",
    "factors": "['2', '4', '8']",
    "methods": "['ht2', 'tucker2']",
    "allocations": "['uniform', 'spectrum', 'sensitivity']",
    "finetune_factors": "[]",
    "calib_images": "256",
    "data_aware": "None",
    "data_aware_images": "512",
    "refit": "None",
    "refine_sweeps": "0",
    "tag": "",
    "bn_images": "2048",
    "bn_augment": "False",
    "device": "cpu",
    "threads": "1",
    "workers": "2",
}


def allocation_command(name: str, settings: dict[str, Any]) -> str:
    """The allocation.py command line a file's settings record (flags left at their default
    are omitted), with the name the file was saved under when that is not the one it wrote."""
    flags = ["--data DATA"]
    for key, default in DEFAULTS.items():
        value = settings.get(key, default)
        if value == default or (key in ("data_aware", "refit") and value == "None"):
            continue
        if value == "True":  # a switch
            flags.append(f"--{key.replace('_', '-')}")
            continue
        if value.startswith("["):
            value = ",".join(ast.literal_eval(value))
        flags.append(f"--{key.replace('_', '-')} {value}")
    nets = "-".join(n.split("_")[-1] for n in ast.literal_eval(settings["nets"]))
    wrote = f"allocation-{nets}{'-' + settings['tag'] if settings.get('tag') else ''}.json"
    text = "python benchmarks/allocation.py " + " ".join(flags)
    return text if wrote == Path(name).name else f"{text}   # saved as {Path(name).name}"


def allocation_commands(results: Results, names: list[str]) -> str:
    """The command block for the allocation files `names`."""
    return command(*(allocation_command(n, results.json(n)["settings"]) for n in names))


ORDER = [(m, a) for m in ("ht2", "tucker2") for a in ("uniform", "spectrum", "sensitivity")]


def pivot(rows: list[dict[str, Any]], factors: list[float], cell) -> list[list[str]]:
    """One line per (method, allocation), one column per factor, `cell(row)` in each."""
    index = {(r["method"], r["allocation"], r["factor"]): r for r in rows}
    lines = []
    for method, allocation in ORDER:
        if not any((method, allocation, f) in index for f in factors):
            continue
        line = [f"{method_name(method)} {allocation}"]
        line += [
            cell(index[(method, allocation, f)]) if (method, allocation, f) in index else "-"
            for f in factors
        ]
        lines.append(line)
    return lines


def _zero_and_calibrated(row: dict[str, Any]) -> str:
    return f"{num(row['zero_shot'])} / {num(row['bn_calibrated'])}"


def allocation_section(results: Results) -> Section | None:
    cpu = [
        r
        for r in allocation_rows(results, "allocation-*.json")
        if r["settings"].get("device") == "cpu"
        and r["settings"].get("refine_sweeps", "0") in ("0", "None")
        and r["settings"].get("calib_images") == "256"
    ]
    if not cpu:
        return None
    files = sorted({r["file"] for r in cpu})
    parts = [
        allocation_commands(results, files),
        "Each size (parameter reduction) is spent three ways: one energy for every layer "
        "(uniform), energies pooled over the layers' spectra (spectrum), or a knapsack over "
        "each layer's measured accuracy loss on 256 training images (sensitivity). Top-1 (%) "
        "on the JPEG test set, zero-shot / after BatchNorm calibration on 2,048 training "
        "images, shared weights, one CPU thread. When two files hold the same row, the later "
        "file (by name) is shown; `benchmarks/results/allocation-*.json` has them all.",
    ]
    for net in sorted({r["net"] for r in cpu}):
        rows = [r for r in cpu if r["net"] == net]
        factors = sorted({r["factor"] for r in rows})
        parts += [
            f"{net_name(net)} (base {num(rows[0]['base'])} %):",
            table(
                ["method, allocation", *(f"{f:g}x" for f in factors)],
                pivot(rows, factors, _zero_and_calibrated),
            ),
        ]
    return Section("Rank allocation before training", "\n\n".join(parts))


def dataaware_section(results: Results) -> Section | None:
    rows = [
        r for r in allocation_rows(results, "allocation-*.json") if r.get("data_aware") is not None
    ]
    if not rows:
        return None
    lines = [
        [
            net_name(r["net"]),
            f"{r['factor']:g}x",
            pipeline(r) + (", block fit" if refit_name(r) != "refit" else ""),
            r["settings"].get("data_aware_images", "-"),
            num(r["bn_calibrated"]),
            num(r["data_aware"]),
            f"{r['seconds']:.0f} + {r['data_aware_seconds']:.0f}",
        ]
        for r in rows
    ]
    body = "\n\n".join(
        [
            allocation_commands(results, sorted({r["file"] for r in rows})),
            "The allocations above with the data-aware refit on top (N training images, no "
            "labels, no training step; the layers left dense after compressed ones, such as the "
            "classifier under spectrum and sensitivity, are refitted too). The refit is least "
            "squares, layer by layer; rows marked 'block fit' (`--refit blocks`) then fit the "
            "factors inside each residual block to the original block's output (L-BFGS on the "
            "output error, kept where held-out images agree). Top-1 (%); seconds of the "
            "allocation + the fit on one loaded CPU thread.",
            table(
                [
                    "net",
                    "size",
                    "method, allocation",
                    "N",
                    "calibrated, no fit",
                    "refit on top",
                    "s",
                ],
                lines,
                "llllrrr",
            ),
        ]
    )
    return Section("Same size, better ranks: allocation + data-aware refit", body)


def _refined(rows: list[dict[str, Any]], plain: dict[tuple, dict[str, Any]]):
    def cell(row: dict[str, Any]) -> str:
        before = plain.get((row["method"], row["allocation"], row["factor"]))
        left = num(before["bn_calibrated"]) if before else "-"
        return f"{left} -> {num(row['bn_calibrated'])}"

    return cell


def refine_section(results: Results) -> Section | None:
    refined = allocation_rows(results, "allocation-resnet20-refine10.json")
    if not refined:
        return None
    plain = {
        (r["method"], r["allocation"], r["factor"]): r
        for r in allocation_rows(results, "allocation-resnet20.json")
        + allocation_rows(results, "allocation-resnet20-2.6x.json")
    }
    factors = sorted({r["factor"] for r in refined})
    parts = [
        allocation_commands(results, results.names("allocation-resnet20-refine10*.json")),
        command(
            "python benchmarks/refine_sweeps.py",
        ),
        "`--refine-sweeps 10` runs ten alternating least-squares rounds on each layer's factors "
        "(HOOI on Tucker-2) after the paper's one-pass truncation: same ranks, same size, lower "
        "weight error. BN-calibrated top-1 (%) on ResNet-20, without -> with the sweeps "
        "(the 'without' figures are the allocation table's):",
        table(
            ["method, allocation", *(f"{f:g}x" for f in factors)],
            pivot(refined, factors, _refined(refined, plain)),
        ),
    ]
    sens = allocation_rows(results, "allocation-resnet20-refine10-sens512.json")
    augmented = results.json("allocation-resnet20-refine10-sens512-bnaug.json")
    if augmented:
        sens += allocation_rows(results, "allocation-resnet20-refine10-sens512-bnaug.json")
    if sens:
        text = "Sensitivity measured on 512 images instead of 256 (the sens512 commands)"
        if augmented:
            net = "cifar10_resnet20"
            text += (
                "; 'augmented' calibrates BatchNorm on images given the training augmentation "
                "(`--bn-augment`, random crop and flip), as training estimated the statistics. "
                "Like for like, the uncompressed model calibrated that way scores "
                f"{num(augmented['baseline_bn'][net])} % (as trained: "
                f"{num(augmented['baseline'][net])} %)"
            )
        parts += [
            text + ":",
            table(
                ["size", "method, allocation", "BN images", "calibrated", "s (allocation)"],
                [
                    [
                        f"{r['factor']:g}x",
                        pipeline(r),
                        "augmented" if bn_augmented(r) else "plain",
                        num(r["bn_calibrated"]),
                        num(r["seconds"], 0),
                    ]
                    for r in sens
                ],
                "lllrr",
            ),
        ]
    sweeps = results.json("refine_sweeps.json")
    if sweeps:
        worst = max(sweeps["errors"], key=lambda n: sweeps["errors"][n][0])
        parts += [
            "Weight error against sweeps (`benchmarks/results/refine_sweeps.json`): the HT-2 "
            "layers of ResNet-20 at their spectrum ranks for 2.6x, mean relative error and the "
            "layer with the largest error; then the seconds to decompose a random 512 x 512 x "
            f"3 x 3 kernel at e = 0.8 ({sweeps['threads']} thread, best of 3):",
            table(
                ["sweeps", *(str(s) for s in sweeps["sweeps"])],
                [
                    ["mean error", *(num(m, 4) for m in sweeps["mean"])],
                    [worst, *(num(e, 4) for e in sweeps["errors"][worst])],
                ],
                "l" + "r" * len(sweeps["sweeps"]),
            ),
            table(
                ["sweeps", "seconds (512 x 512 x 3 x 3)"],
                [[k, num(v)] for k, v in sweeps["seconds_512"].items()],
                "rr",
            ),
        ]
    return Section("Refined factors (`--refine-sweeps 10`)", "\n\n".join(parts))


SECTIONS = [
    sweep_section,
    calibration_section,
    zeroshot_section,
    allocation_section,
    dataaware_section,
    refine_section,
]
