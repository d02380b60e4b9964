"""Results measured on a GPU (one NVIDIA H100 80GB lent for a few minutes), kept apart from the
CPU figures."""

from __future__ import annotations

from .accuracy import allocation_commands, allocation_rows, pivot
from .base import Results, Section, command, grouped, net_name, num, table
from .fast import decompose_header, decompose_rows

LOGS = {
    "gpu/finetune-r20-e07-cuda.jsonl": "ResNet-20 e = 0.7, 1-epoch fine-tune, CUDA + bf16 "
    "autocast (finetune-cifar10 recipe, batch 64)",
    "gpu/r18-no-channels-last.jsonl": "resnet18 random init, 224 px, batch 128, bf16, without "
    "channels_last",
    "gpu/r18-channels-last.jsonl": "resnet18, the same with `--channels-last`",
}


def logs_section(results: Results) -> Section | None:
    found = [(n, results.jsonl(n)) for n in LOGS if results.jsonl(n) is not None]
    if not found:
        return None
    rows = []
    for name, lines in found:
        epochs = [line for line in lines if "images_per_second" in line]
        first = [line for line in lines if line["epoch"] == 0]
        after = (
            f"{num(first[0]['top1'])} % calibrated -> {num(epochs[-1]['top1'])} %"
            if first
            else "- (synthetic data)"
        )
        rows.append(
            [
                LOGS[name],
                len(epochs),
                ", ".join(grouped(line["images_per_second"]) for line in epochs),
                ", ".join(num(line["seconds"], 1) for line in epochs),
                after,
            ]
        )
    body = "\n\n".join(
        [
            command(
                "ht2 compress cifar10_resnet20 --weights resnet20-12fca82f.th --energy 0.7 "
                "--out c07",
                "ht2 finetune c07 --data cifar10-jpeg.tar.gz --epochs 1 --amp bf16 --device cuda "
                "--workers 14 --out f07",
                "# synthetic ImageFolder: 8 classes x 320 random 256x256 JPEGs (train), 16 (val)",
                "ht2 train resnet18 --data synth --epochs 10 --max-steps 50 --batch-size 128 "
                "--amp bf16 --device cuda --workers 14 [--channels-last] --out r18",
            ),
            "One prepared script (torch 2.11.0+cu130 there); each run's log.jsonl is in "
            "`benchmarks/results/gpu/`. The resnet18 runs are bound by JPEG decoding in the loader "
            "processes, not by the GPU, so they say nothing about channels_last itself; the "
            "fine-tune is loader-bound too.",
            table(
                ["run", "epochs", "images/s per epoch", "seconds per epoch", "top-1"], rows, "lrrrr"
            ),
        ]
    )
    return Section("On a GPU: training runs", body)


def allocation_section(results: Results) -> Section | None:
    rows = [
        r
        for r in allocation_rows(results, "allocation-*.json")
        if r["settings"].get("device") != "cpu"
    ]
    if not rows:
        return None
    names = sorted({r["file"] for r in rows})
    parts = [
        allocation_commands(results, names),
        "The rank allocation runs on the H100 (CUDA, 8 threads, 8 workers): zero-shot / "
        "calibrated top-1 (%), and top-1 after one epoch of fine-tuning where it ran. The "
        "ResNet-56 file holds the rows that finished before the GPU was given back.",
    ]
    for net in sorted({r["net"] for r in rows}):
        mine = [r for r in rows if r["net"] == net]
        factors = sorted({r["factor"] for r in mine})
        tuned = sorted({r["factor"] for r in mine if r.get("finetuned_1") is not None})
        header = [
            "method, allocation",
            *(f"{f:g}x" for f in factors),
            *(f"{f:g}x, 1 epoch" for f in tuned),
        ]
        lines = pivot(mine, factors, lambda r: f"{num(r['zero_shot'])} / {num(r['bn_calibrated'])}")
        epochs = pivot(mine, tuned, lambda r: num(r.get("finetuned_1")))
        after = {line[0]: line[1:] for line in epochs}
        table_rows = [line + after.get(line[0], ["-"] * len(tuned)) for line in lines]
        parts += [
            f"{net_name(net)} (base {num(mine[0]['base'])} %):",
            table(header, table_rows, "l" + "l" * len(factors) + "r" * len(tuned)),
        ]
    return Section("On a GPU: rank allocation and one epoch", "\n\n".join(parts))


def decompose_section(results: Results) -> Section | None:
    data = results.json("decompose_speed_h100_cuda.json")
    if data is None:
        return None
    body = "\n\n".join(
        [
            command(
                "python benchmarks/decompose_speed.py --device cuda"
                "   # decompose_speed_h100_cuda.json"
            ),
            "The decomposition speed benchmark with the model on the H100 (e = 0.9, random init); "
            "columns as in *Decomposition speed*.",
            table(decompose_header(True), decompose_rows(data, "H100"), "lllrrrrl"),
        ]
    )
    return Section("On a GPU: decomposition speed", body)


SECTIONS = [logs_section, allocation_section, decompose_section]
