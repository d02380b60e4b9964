"""Realized speed: compressed models against their originals, best against best and like for
like over every treatment (benchmarks/realized_speed.py), and the issue's targets."""

from __future__ import annotations

from typing import Any

from ht2.choices import layout_name

from .base import Results, Section, command, net_name, num, table, times

BEST = [
    "model",
    "compression",
    "batch",
    "compressed as",
    "ms",
    "original as",
    "original ms",
    "best vs best",
    "fewer MACs",
    "realized/MAC",
    "fastest like-for-like",
]


def how(treatment: dict[str, Any]) -> str:
    """'float32 NHWC onnxruntime', with '(BN unfolded)' when the BatchNorms were not folded."""
    layout = layout_name(treatment["memory_format"])
    text = f"{treatment['dtype']} {layout} {treatment['runtime']}"
    return text if treatment["fold_bn"] else text + " (BN unfolded)"


def pair_cells(pair: dict[str, Any]) -> list[str]:
    """One best-against-best pair as cells: each side's treatment and time, then the speedup."""
    return [
        how(pair["treatment"]),
        num(pair["latency_ms"], 2),
        how(pair["baseline_treatment"]),
        num(pair["baseline_latency_ms"], 2),
        times(pair["speedup"]),
    ]


def best_rows(data: dict[str, Any]) -> list[list[str]]:
    """One line per model and batch size: each side in its own fastest treatment."""
    rows = []
    for model in data["models"]:
        for entry in model["best"]:
            pair, fastest = entry["best_against_best"], entry["fastest_like_for_like"]
            rows.append(
                [
                    net_name(model["model"]),
                    model["compression"],
                    entry["batch_size"],
                    *pair_cells(pair),
                    times(model["mac_reduction"]),
                    num(pair["realized_over_mac"]),
                    f"{times(fastest['speedup'])} ({how(fastest['treatment'])})",
                ]
            )
    return rows


def target_rows(data: dict[str, Any]) -> list[list[str]]:
    """Each target: the speedup asked for and the one reached."""
    verdicts = {None: "not measured", True: "met", False: "not met"}
    return [
        [
            net_name(row["model"]),
            row["compression"],
            row["batch_size"],
            f">= {times(row['target_speedup'])}",
            times(row["reached"]),
            verdicts[row["met"]],
        ]
        for row in data["targets"]
    ]


def top1(accuracy: dict[str, float] | None) -> str:
    """'as timed / calibrated' top-1, or '-' when not measured."""
    if not accuracy:
        return "-"
    return f"{num(accuracy['top1'])} / {num(accuracy['top1_calibrated'])}"


def accuracy_rows(data: dict[str, Any]) -> list[list[str]]:
    """Top-1 of every model timed, for the networks with real weights (`--data`)."""
    rows = []
    for model in data["models"]:
        if "accuracy" not in model:
            continue
        name = net_name(model["model"])
        rows.append([name, "original", "-", top1(model["accuracy"]["original"])])
        rows.append(
            [
                name,
                model["compression"],
                times(model["mac_reduction"]),
                top1(model["accuracy"]["compressed"]),
            ]
        )
        for row in model.get("speed_target", []):
            label = f"--target-speedup {row['target_speedup']:g} (batch {row['batch_size']})"
            rows.append([name, label, times(row["mac_reduction"]), top1(row.get("accuracy"))])
        pruned = model.get("pruned")
        if pruned:
            rows.append(
                [
                    name,
                    "channel pruning",
                    times(pruned["mac_reduction"]),
                    top1(pruned.get("accuracy")),
                ]
            )
    return rows


SPEED = [
    "model",
    "batch",
    "target",
    "planned for",
    "planner reached",
    "timed in",
    "speedup",
    "fewer params",
    "fewer MACs",
    "layers factorized / dense",
]


def speed_rows(data: dict[str, Any]) -> list[list[str]]:
    """`--target-speedup`: the original compressed afresh by the speed planner, per batch."""
    return [
        [
            net_name(model["model"]),
            row["batch_size"],
            times(row["target_speedup"]),
            how({**row["planned_in"], "fold_bn": True}),
            times(row["planner_reached"]),
            how(row["treatment"]),
            times(row["speedup"]),
            times(row["param_reduction"]),
            times(row["mac_reduction"]),
            f"{row['layers_factorized']} / {row['layers_dense']}",
        ]
        for model in data["models"]
        for row in model.get("speed_target", [])
    ]


PRUNED = [
    "model",
    "batch",
    "pruned as",
    "ms",
    "original as",
    "original ms",
    "best vs best",
    "fewer MACs",
    "fewer params",
    "decomposed, best vs best",
]


def pruned_rows(data: dict[str, Any]) -> list[list[str]]:
    """`--prune`: the original channel-pruned to the same MACs, beside the decomposed model."""
    rows = []
    for model in data["models"]:
        decomposed = {e["batch_size"]: e["best_against_best"] for e in model["best"]}
        pruned = model.get("pruned")
        for entry in pruned["best"] if pruned else []:
            pair = entry["best_against_best"]
            rows.append(
                [
                    net_name(model["model"]),
                    entry["batch_size"],
                    *pair_cells(pair),
                    times(pruned["mac_reduction"]),
                    times(pruned["param_reduction"]),
                    times(decomposed[entry["batch_size"]]["speedup"]),
                ]
            )
    return rows


def conditions(data: dict[str, Any]) -> str:
    """How the figures were taken, from the JSON."""
    start, end = data["load_average"]["start"][0], data["load_average"]["end"][0]
    weights = ", ".join(f"{net_name(m['model'])}: `{m['weights']}`" for m in data["models"])
    threads = f"{data['threads']} thread" + "s" * (data["threads"] != 1)
    return (
        f"Each compressed model and its original ran in every treatment (dtype x memory format "
        f"x runtime: {', '.join(data['runtimes'])}), BatchNorms folded on both sides, run by "
        f"run in turn; medians of {data['repeats']} timed runs after {data['warmup']} warm-up "
        f"runs, {data['device']}, {threads}, PyTorch {data['torch']}, load "
        f"average {num(start)} at the start and {num(end)} at the end. Best against best: "
        "each model in its own fastest treatment; fastest like-for-like: the treatment the "
        "compressed model runs fastest in, the original in the same one. realized/MAC: the "
        f"best-against-best speedup over the MAC reduction. Weights: {weights}."
    )


def realized_section(results: Results) -> Section | None:
    files = results.names("realized_speed*.json")
    if not files:
        return None
    parts = []
    for name in files:
        data = results.json(name)
        parts += [
            f"`{name}`:",
            command(data["command"]),
            conditions(data),
            table(BEST, best_rows(data), "llrlrlrrrrl"),
        ]
        if any(row["met"] is not None for row in data["targets"]):  # a target's model ran
            parts += [
                "Targets (best against best):",
                table(
                    ["model", "compression", "batch", "target", "reached", "verdict"],
                    target_rows(data),
                    "llrrrl",
                ),
            ]
        speed = speed_rows(data)
        if speed:
            parts += [
                "`--target-speedup` (ht2.planning.speed): each original compressed afresh for "
                "the treatment it ran fastest in (whole models timed in it, layers alone in "
                "eager where it is an exported runtime), then timed against it like for like:",
                table(SPEED, speed, "lrrlrlrrrr"),
            ]
        scored = accuracy_rows(data)
        if scored:
            parts += [
                "What the speed costs before any training (`--data`): top-1 (%) on the test "
                "split as timed / after BatchNorm calibration on training images:",
                table(["model", "variant", "fewer MACs", "top-1 / calibrated"], scored, "llrr"),
            ]
        rival = pruned_rows(data)
        if rival:
            parts += [
                "`--prune`: the original channel-pruned (`ht2 prune --target-macs`, L1 filters) "
                "to the MAC reduction the compressed model reached, timed the same way in the "
                "same run:",
                table(PRUNED, rival, "lrlrlrrrrr"),
            ]
        grouped = layer_group_rows(data)
        if grouped:
            parts += [
                "`--per-layer`: each factorized layer alone against its dense original, eager "
                "PyTorch in the dtype and memory format of the compressed model's fastest "
                "treatment at that batch size, summed over the layers that share a method and "
                "an input shape (where the time goes):",
                table(LAYER_GROUPS, grouped, "lrllrrrrr"),
            ]
        if data["notes"]:
            parts.append("\n".join(f"- {note}" for note in data["notes"]))
    return Section("How fast: realized speed, best against best", "\n\n".join(parts))


LAYER_GROUPS = [
    "model",
    "batch",
    "method",
    "input (C x H x W)",
    "layers",
    "dense ms",
    "factorized ms",
    "speedup",
    "fewer MACs",
]


def layer_group_rows(data: dict[str, Any]) -> list[list[str]]:
    """Per model, batch size, method and input shape: the layers' summed times, dense against
    factorized, and the range of their MAC reductions."""
    rows = []
    for model in data["models"]:
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for layer in model.get("layers", []):
            shape = "x".join(str(n) for n in layer["input_shape"][1:])
            groups.setdefault((layer["batch_size"], layer["method"], shape), []).append(layer)
        for (batch, method, shape), layers in groups.items():
            dense = sum(layer["dense_ms"] for layer in layers)
            factorized = sum(layer["factorized_ms"] for layer in layers)
            reductions = [layer["mac_reduction"] for layer in layers]
            low, high = min(reductions), max(reductions)
            rows.append(
                [
                    net_name(model["model"]),
                    batch,
                    method,
                    shape,
                    len(layers),
                    num(dense),
                    num(factorized),
                    times(dense / factorized),
                    times(low) if high - low < 0.005 else f"{times(low)}-{times(high)}",
                ]
            )
    return rows


def chain_rows(layer: dict[str, Any], batch_size: int) -> list[list[str]]:
    """One line per treatment: each variant's time and MAC rate, and HT-2 against dense."""
    macs = layer["macs_per_sample"]
    rows = []
    for timing in layer["timings"]:
        ms = timing["ms"]
        rates = {variant: macs[variant] * batch_size / (ms[variant] * 1e6) for variant in ms}
        treatment = timing["treatment"]
        rows.append(
            [
                f"{treatment['dtype']} {layout_name(treatment['memory_format'])} "
                f"{treatment['runtime']}",
                num(ms["dense"]),
                num(ms["ht2"]),
                num(ms["matmul chain"]),
                times(ms["dense"] / ms["ht2"]),
                num(rates["dense"], 1),
                num(rates["ht2"], 1),
                num(rates["matmul chain"], 1),
            ]
        )
    return rows


def chain_section(results: Results) -> Section | None:
    data = results.json("layer_chain.json")
    if data is None:
        return None
    parts = [
        command(data["command"] + "   # layer_chain.json"),
        f"Where an HT-2 layer's time goes. {net_name(data['model'])} compressed at e = "
        f"{data['energy']:g} (weights: `{data['weights']}`); the first HT-2 layer of each stage, "
        "timed at batch "
        f"{data['batch_size']} against its dense conv (the product of its factors) and against "
        "the same factors written as matmuls over the NHWC view (3-tap convs as sums of "
        "shifted matmuls), which torch.compile may fuse. All three ran in turn in each "
        f"treatment, {data['threads']} thread(s), medians of {data['repeats']} runs after "
        f"{data['warmup']} warm-up, load average {data['load'][0]:.2f} at the start and "
        f"{data['load'][-1]:.2f} at the end. GMAC/s: the variant's multiply-adds over its "
        "time, the rate the runtime reaches on that shape.",
    ]
    header = ["treatment", "dense ms", "HT-2 ms", "matmul chain ms", "HT-2 vs dense"]
    header += ["dense GMAC/s", "HT-2 GMAC/s", "chain GMAC/s"]
    for layer in data["layers"]:
        ranks = ", ".join(f"{k} {v}" for k, v in layer["ranks"].items())
        channels, height, width = layer["input_size"]
        macs = layer["macs_per_sample"]
        parts += [
            f"`{layer['name']}`: {channels} -> {layer['out_channels']} channels at "
            f"{height}x{width}, ranks {ranks}; {times(macs['dense'] / macs['ht2'])} fewer MACs.",
            table(header, chain_rows(layer, data["batch_size"]), "l" + "r" * (len(header) - 1)),
        ]
    return Section("How fast: one layer, where the time goes", "\n\n".join(parts))


SECTIONS = [realized_section, chain_section]
