"""How fast: inference latency (latency-aware forms, BN folding, ONNX Runtime, rank rounding),
the time to decompose big models, and training throughput on this CPU."""

from __future__ import annotations

from typing import Any

from ht2.choices import treatment_phrase

from .base import Results, Section, command, grouped, load, net_name, num, table, times

PRECISION = [
    "model",
    "threads",
    "setting",
    "images_per_second",
    "x_float32",
    "loss_after",
    "loss_vs_float32",
    "steps",
    "load",
]
FINETUNE = [
    "setting",
    "threads",
    "steps",
    "top1_before",
    "loss_last_third",
    "top1_after",
    "test_images",
    "load",
]
DATA = ["measure", "threads", "path", "images_per_second", "x_jpeg", "load"]


def _forms(row: dict[str, Any]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(row["forms"].items()))


def latency_section(results: Results) -> Section | None:
    files = results.names("latency_aware_speed*.json")
    if not files:
        return None
    parts = [
        command(
            "python benchmarks/latency_aware_speed.py --threads 1",
            "python benchmarks/latency_aware_speed.py --threads 1 --models cifar10_resnet20"
            "   # saved as latency_aware_speed-resnet20-quiet.json",
        ),
        "Shared weights, factors at the reference's sizes (`keep_if_larger=False`), "
        "`choose_forms` per batch size, then the original, the four-conv factors and the "
        "latency-aware model timed alternately; speed-up = original median / model median. "
        "Forms kept: how many layers stay dense or take each execution form.",
    ]
    notes = {
        "latency_aware_speed.json": "Both networks, with a load average of about 7 on the 2 "
        "cores, so the batch-1 rows are mostly noise:",
        "latency_aware_speed-resnet20-quiet.json": "ResNet-20 again with the machine otherwise "
        "quiet:",
    }
    for name in files:
        data = results.json(name)
        parts += [
            notes.get(name, f"`{name}`:"),
            table(
                [
                    "model",
                    "e",
                    "batch",
                    "fewer MACs",
                    "original ms",
                    "four-conv",
                    "latency-aware",
                    "forms kept",
                ],
                [
                    [
                        net_name(r["model"]),
                        f"{r['energy']:g}",
                        r["batch"],
                        times(r["macs_original"] / r["macs_factors"]),
                        num(r["ms_original"], 2),
                        times(r["speedup_factors"]),
                        times(r["speedup_latency_aware"]),
                        _forms(r),
                    ]
                    for r in sorted(data["rows"], key=lambda r: (r["batch"], r["model"]))
                ],
                "lrrrrrrl",
            ),
        ]
    return Section("How fast: latency-aware execution forms", "\n\n".join(parts))


def inference_section(results: Results) -> Section | None:
    data = results.json("inference_speed.json")
    if data is None:
        return None
    body = "\n\n".join(
        [
            command(
                f"python benchmarks/inference_speed.py --threads {data['threads']} "
                f"--repeats {data['repeats']}"
            ),
            f"The bundled ResNet-20 compressed by HT-2; median ms per batch over {data['repeats']} "
            f"repeats, {data['threads']} thread, on a loaded machine. Max |diff| is the largest "
            "output difference from the PyTorch model.",
            table(
                [
                    "e",
                    "batch",
                    "fewer MACs",
                    "original",
                    "HT-2",
                    "BN-folded",
                    "ONNX Runtime",
                    "max diff folded",
                    "max diff ONNX",
                ],
                [
                    [
                        f"{r['energy']:g}",
                        r["batch_size"],
                        times(r["mac_reduction"]),
                        num(r["original_ms"], 1),
                        num(r["compressed_ms"], 1),
                        num(r["folded_ms"], 1),
                        num(r["onnxruntime_ms"], 1),
                        f"{r['fold_max_abs_diff']:.1e}",
                        f"{r['onnx_max_abs_diff']:.1e}",
                    ]
                    for r in data["rows"]
                ],
                "rrrrrrrrr",
            ),
        ]
    )
    return Section("How fast: BN folding and ONNX Runtime", body)


ROUNDED_BEFORE = "round_ranks.json"  # float32 NCHW, BatchNorms unfolded; no treatment field


def rounding_table(rows: list[dict[str, Any]]) -> str:
    """e x rounding multiple, speed-up against the original per batch size and, when the rows
    carry it, against the unrounded variant (round 1) too."""
    index = {(r["energy"], r["round_ranks"], r["batch_size"]): r for r in rows}
    sizes = sorted({r["batch_size"] for r in rows})
    keys = sorted({(r["energy"], r["round_ranks"]) for r in rows}, key=lambda k: (-k[0], k[1]))
    against = [("speedup", f"batch {b}", b) for b in sizes]
    if any(r.get("vs_unrounded") is not None for r in rows):
        against += [("vs_unrounded", f"vs round 1, batch {b}", b) for b in sizes]
    header = ["e", "round", "params x", "MACs x", *(title for _, title, _ in against)]
    lines = [
        [
            f"{e:g}",
            n,
            num(index[(e, n, sizes[0])]["params_x"]),
            num(index[(e, n, sizes[0])]["macs_x"]),
            *(times(index[(e, n, b)].get(key)) for key, _, b in against),
        ]
        for e, n in keys
        if all((e, n, b) in index for b in sizes)
    ]
    return table(header, lines, "r" * len(header))


def original_times(rows: list[dict[str, Any]]) -> str:
    """'the original takes 1.90 ms at batch 1, 86.3 ms at batch 128' (medians)."""
    medians = {r["batch_size"]: r["original_ms"] for r in rows}
    spans = [f"{num(ms, 2 if ms < 10 else 1)} ms at batch {b}" for b, ms in sorted(medians.items())]
    return "the original takes " + ", ".join(spans)


def verdict_text(verdict: dict[str, Any]) -> str:
    """How often rounding beat round 1 in one treatment, and its best case."""
    best = verdict["best"]
    if best is None:
        return "No round-1 variant to compare with."
    return (
        f"Rounded ranks ran faster than round 1 in {verdict['rounded_faster']} of "
        f"{verdict['cells']} cells; best {times(best['vs_unrounded'])} (e {best['energy']:g}, "
        f"round {best['round_ranks']}, batch {best['batch_size']})."
    )


def rounding_before(data: dict[str, Any]) -> list[str]:
    """The first measurement: float32 NCHW, unfolded."""
    return [
        command(
            f"python benchmarks/round_ranks.py --threads {data['threads']} "
            f"--repeats {data['repeats']}"
        ),
        "Shared ResNet-20, HT-2, `--round-ranks N` (default keep-if-larger: a layer whose "
        "rounded factors are not smaller stays dense), timed against the original alternately, "
        "one thread, machine otherwise quiet; speed-up = original median / variant median.",
        rounding_table(data["rows"]),
    ]


def rounding_treated(name: str, data: dict[str, Any]) -> list[str]:
    """A run with treatments (round_ranks-*.json): one table per treatment, named."""
    cpu, load_average, threads = data["cpu"], data["load_average"], data["threads"]
    flags = f"AVX-512 BF16 {_yes(cpu['avx512_bf16'])}, AMX {_yes(cpu['amx'])}"
    parts = [
        command(f"{data['command']}   # {name}"),
        f"`{name}`: the shared ResNet-20 compressed by HT-2 at each e, ranks rounded up to "
        "multiples of `round`; the original and every variant prepared under each treatment "
        "below (eager PyTorch; bfloat16 under autocast with float32 weights) and all "
        f"timed alternately in one process, {threads} thread{'s' if threads > 1 else ''}, "
        f"{data['repeats']} repeats, on {cpu['model']} ({cpu['count']} cores, {flags}), load "
        f"average {num(load_average['start'][0])} at the start and "
        f"{num(load_average['end'][0])} at the end. Speed-up = original median / variant "
        "median and 'vs round 1' = unrounded median / variant median, both in the same "
        "treatment.",
        *(f"- {note}" for note in data["notes"]),
    ]
    for treatment in data["treatments"]:
        rows = [r for r in data["rows"] if r["treatment"] == treatment]
        verdict = next((v for v in data["verdicts"] if v["treatment"] == treatment), None)
        said = f" {verdict_text(verdict)}" if verdict else ""
        parts += [
            f"{treatment_phrase(treatment)}: {original_times(rows)}.{said}",
            rounding_table(rows),
        ]
    return parts


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def rounding_section(results: Results) -> Section | None:
    names = results.names("round_ranks*.json")
    if not names:
        return None
    names = sorted(names, key=lambda n: (n != ROUNDED_BEFORE, n))
    parts = []
    for name in names:
        data = results.json(name)
        parts += rounding_before(data) if name == ROUNDED_BEFORE else rounding_treated(name, data)
    parts.append(
        "Rounding the ranks to multiples of 8 is meant for GPUs' tensor cores; it was not "
        "measured on one."
    )
    return Section("How fast: rank rounding", "\n\n".join(parts))


DECOMPOSE = {
    "decompose_speed.json": (
        "python benchmarks/decompose_speed.py --threads 1 --paths ours float64",
        "this CPU",
    ),
    "decompose_speed_h100host_cpu1.json": (
        "python benchmarks/decompose_speed.py --threads 1 --models resnet50 vgg16_bn --paths "
        "ours float64",
        "a quiet 16-core host (the GPU machine's CPU)",
    ),
}


def decompose_rows(data: dict[str, Any], where: str) -> list[list[str]]:
    gpu = any("peak_gpu_mib" in r for r in data["rows"])
    rows = []
    for r in data["rows"]:
        line = [
            r["model"],
            where,
            r["path"],
            num(r["seconds"], 1 if r["seconds"] >= 10 else 2),
            grouped(r["peak_rss_mib"]),
            grouped(r["peak_rss_mib"] - r["rss_before_mib"]),
        ]
        if gpu:
            line.append(grouped(r["peak_gpu_mib"]))
        rows.append(line + [r["ranks_match"]])
    return rows


def decompose_header(gpu: bool) -> list[str]:
    return [
        "model",
        "where",
        "path",
        "seconds",
        "peak RSS MiB",
        "added MiB",
        *(["peak GPU MiB"] if gpu else []),
        "ranks",
    ]


def decompose_section(results: Results) -> Section | None:
    found = [(n, results.json(n)) for n in DECOMPOSE if results.json(n) is not None]
    if not found:
        return None
    rows = []
    for name, data in found:
        load_text = "-".join(f"{v:.1f}" for v in data["load_average"][:1])
        rows += decompose_rows(
            data, f"{DECOMPOSE[name][1]}, {data['threads']} thread, load {load_text}"
        )
    body = "\n\n".join(
        [
            command(*(f"{DECOMPOSE[n][0]}   # {n}" for n, _ in found)),
            "e = 0.9, random init. Each (model, path) runs in its own subprocess; `ours` is the "
            "default path, `float64` the same algorithm all in float64 (ht2 before the float32 "
            "change), `full_svd` a plain `torch.linalg.svd` in float64. 'added MiB' is the peak "
            "resident memory above the process's before compressing; 'ranks' says whether the path "
            "kept the same ranks as ours. The GPU rows are under *On a GPU*.",
            table(decompose_header(False), rows, "lllrrrl"),
        ]
    )
    return Section("How fast: decomposition speed", body)


def train_speed_section(results: Results) -> Section | None:
    data = results.json("train_speed.json")
    if data is None:
        return None
    parts = [
        command(data["command"] + "   # writes benchmarks/results/train_speed.json and .md"),
        f"This CPU has AVX-512 BF16: {data['machine']['avx512_bf16']}, AMX: "
        f"{data['machine']['amx']}. Everything runs in one process through ht2's own training "
        f"step, batch {data['batch']}; the settings compared take turns, {data['rounds']} "
        f"rounds of {data['steps_per_round']} steps after an untimed round, and a setting's "
        "images/s is its median round. The load column is the 1-minute load average before "
        "and after each part (2 cores).",
    ]
    if data.get("precision"):
        parts += [
            "Precision and memory format, each setting trained from the same weights on the "
            "same batches (ResNet-20 from random init; its HT-2 compression at e = 0.7 from the "
            "bundled weights); `loss_vs_float32` compares the last round's mean loss with "
            "float32's:",
            _records(data["precision"], PRECISION),
        ]
    if data.get("finetune"):
        parts += [
            "Fine-tuning check: the compressed model (BatchNorm re-estimated on 2,048 training "
            "images) trained from the same weights on the same batches, then top-1 in float32 "
            "on the test images:",
            _records(data["finetune"], FINETUNE),
        ]
    if data.get("data"):
        parts += [
            "Data path, the 1-worker JPEG loader against the decoded in-memory split "
            "(`ht2.train.inputs`): first the batches alone, then training steps in the default "
            "precision:",
            _records(data["data"], DATA),
        ]
    for name, note in (
        (
            "train_speed-2threads/train_speed.json",
            "A rerun of the precision part at 2 threads "
            "under heavy load from other jobs: the ranking is not stable there.",
        ),
        (
            "train_speed-loaded/train_speed.json",
            "The first full run, with other jobs loading both cores (moved to its folder by hand):",
        ),
    ):
        other = results.json(name)
        if other is None:
            continue
        parts += [f"`{other['command']}` ({name}). {note}"]
        parts += [
            _records(other[k], cols)
            for k, cols in (("precision", PRECISION), ("finetune", FINETUNE), ("data", DATA))
            if other.get(k)
        ]
    return Section("How fast: training speed on this CPU", "\n\n".join(parts))


def _records(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """The JSON's records as they are, one column per key (load as a range)."""

    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key)
        return load(value) if key == "load" else "-" if value is None else str(value)

    return table(columns, [[cell(r, k) for k in columns] for r in rows])


SECTIONS = [
    latency_section,
    inference_section,
    rounding_section,
    decompose_section,
    train_speed_section,
]
