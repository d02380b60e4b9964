"""Training speed on this machine: precision and memory format, then JPEG files against memory.

Run: python benchmarks/train_speed.py --data ../shared/data/cifar10-jpeg.tar.gz
         [--threads 1,2] [--steps 6] [--rounds 4] [--finetune-steps 150] [--out DIR]

Everything runs in this one process, through ht2's own training step (ht2.train.loop), batch
128, and the settings being compared take turns: `--rounds` rounds of `--steps` steps each,
after one untimed round; a setting's images/s is its median round. Only ratios measured side by
side mean anything on a shared machine; the load average is recorded with each part.

1. precision: ResNet-20 (random init) and its HT-2 compression at e = 0.7 (bundled weights),
   each trained from the same weights on the same in-memory batches in float32 or bfloat16
   autocast, NCHW or channels_last; the last round's mean loss is kept to compare with float32.
2. data: the 1-worker JPEG loader against the decoded in-memory path (ht2.train.inputs), first
   data alone (batches produced per second), then training steps in ht2's default precision.
3. fine-tune (--finetune-steps, 0 skips it): the compressed model, its BatchNorm statistics
   re-estimated on 2,048 training images, fine-tuned from the same weights on the same batches
   in float32 and in the default precision, then top-1 (float32) on the whole test split.
Prints markdown tables and writes train_speed.json and train_speed.md into --out.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from paths import command_line  # benchmarks/ is on sys.path when run as a script

import ht2
from ht2.metrics.accuracy import evaluate_accuracy
from ht2.train.calibrate import recalibrate_batchnorm
from ht2.train.config import TrainConfig
from ht2.train.distributed import World
from ht2.train.inputs import build_inputs
from ht2.train.loop import StepSettings, train_one_epoch
from ht2.train.precision import resolve_precision
from ht2.train.schedules import build_optimizer

NET = "cifar10_resnet20"
ENERGY = 0.7
BATCH = 128
LR = 0.01
CALIBRATION_IMAGES = 2048  # BatchNorm statistics re-estimated before fine-tuning, as ht2 does
SETTINGS = {  # name: (amp, channels_last)
    "float32": ("none", False),
    "float32 + channels_last": ("none", True),
    "bf16": ("bf16", False),
    "bf16 + channels_last": ("bf16", True),
}
CPU = torch.device("cpu")
WORLD = World(rank=0, size=1, local_rank=0, device=CPU)


def load() -> float:
    """The 1-minute load average (how busy the shared machine was)."""
    return round(os.getloadavg()[0], 2)


def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    dense = ht2.models.create(NET)
    compressed = ht2.models.create(NET, weights="pretrained")
    ht2.compress(compressed, energy=ENERGY, example_input=torch.zeros(1, 3, 32, 32))
    return {"ResNet-20": dense, f"ResNet-20 HT-2 e={ENERGY}": compressed}


class Trainee:
    """One setting's copy of a model, its optimiser and step settings."""

    def __init__(self, model: torch.nn.Module, amp: str, channels_last: bool) -> None:
        self.model = copy.deepcopy(model)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, LR, 0.9, True, 3e-4)
        self.settings = StepSettings(CPU, amp, channels_last)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)

    def train(self, batches) -> dict[str, float]:
        return train_one_epoch(
            self.model, batches, self.optimizer, None, False, self.scaler, self.settings, WORLD
        )


def in_turn(runs: dict, rounds: int, step) -> dict[str, list[dict]]:
    """Call step(name, run, round) for every run in turn, for one untimed round and `rounds`."""
    results: dict[str, list[dict]] = {name: [] for name in runs}
    for index in range(rounds + 1):
        for name, run in runs.items():
            done = step(name, run, index)
            if index:
                results[name].append(done)
    return results


def median_rate(rounds: list[dict]) -> float:
    return statistics.median(r["images_per_second"] for r in rounds)


def precision_part(batches: list, threads: list[int], steps: int, rounds: int) -> list[dict]:
    rows = []
    for threads_now, (label, model) in itertools.product(threads, models().items()):
        torch.set_num_threads(threads_now)
        trainees = {name: Trainee(model, *SETTINGS[name]) for name in SETTINGS}
        before = load()
        results = in_turn(
            trainees,
            rounds,
            lambda name, t, i: t.train(batches[i * steps : (i + 1) * steps]),
        )
        base = median_rate(results["float32"])
        base_loss = results["float32"][-1]["loss"]
        for name, timed in results.items():
            rate, loss = median_rate(timed), timed[-1]["loss"]
            rows.append(
                {
                    "model": label,
                    "threads": threads_now,
                    "setting": name,
                    "images_per_second": round(rate, 1),
                    "x_float32": round(rate / base, 2),
                    "loss_after": round(loss, 4),
                    "loss_vs_float32": round(loss / base_loss - 1, 4),
                    "steps": (rounds + 1) * steps,
                    "load": [before, load()],
                }
            )
        print(table([r for r in rows if r["threads"] == threads_now and r["model"] == label]))
    return rows


def data_inputs(data: str, entry) -> dict:
    inputs = {}
    for name, in_memory in (("JPEG files, 1 worker", False), ("in memory", True)):
        config = TrainConfig(in_memory=in_memory, workers=1, seed=0, batch_size=BATCH)
        built = build_inputs(data, entry, config, WORLD, BATCH)
        built.sampler.set_epoch(0)
        inputs[name] = built.train
    return inputs


def data_part(data: str, threads: list[int], steps: int, rounds: int) -> list[dict]:
    entry = ht2.models.get_entry(NET)
    sources = data_inputs(data, entry)
    rows = []

    def only_data(name, batches, index):
        start = time.perf_counter()
        seen = sum(len(labels) for _, labels in itertools.islice(batches, steps * 4))
        return {"images_per_second": seen / (time.perf_counter() - start)}

    torch.set_num_threads(1)
    before = load()
    timed = in_turn(sources, rounds, only_data)
    rows += rate_rows(timed, "data only", 1, [before, load()])
    precision = resolve_precision("auto", None, CPU)
    model = models()["ResNet-20"]
    for threads_now in threads:
        torch.set_num_threads(threads_now)
        trainees = {
            name: Trainee(model, precision.amp, precision.channels_last) for name in sources
        }
        before = load()
        timed = in_turn(
            trainees,
            rounds,
            lambda name, t, i: t.train(itertools.islice(sources[name], steps)),
        )
        rows += rate_rows(
            timed, f"training ({precision.describe()})", threads_now, [before, load()]
        )
    print(table(rows))
    return rows


def rate_rows(timed: dict, what: str, threads: int, loads: list[float]) -> list[dict]:
    base = median_rate(timed["JPEG files, 1 worker"])
    return [
        {
            "measure": what,
            "threads": threads,
            "path": name,
            "images_per_second": round(median_rate(rounds), 1),
            "x_jpeg": round(median_rate(rounds) / base, 2),
            "load": loads,
        }
        for name, rounds in timed.items()
    ]


def finetune_part(data: str, steps: int, threads: int) -> list[dict]:
    entry = ht2.models.get_entry(NET)
    torch.set_num_threads(threads)
    config = TrainConfig(in_memory=True, seed=0, batch_size=BATCH)
    inputs = build_inputs(data, entry, config, WORLD, BATCH)
    inputs.sampler.set_epoch(0)
    batches = list(itertools.islice(inputs.train, steps))
    model = models()[f"ResNet-20 HT-2 e={ENERGY}"]
    recalibrate_batchnorm(model, inputs.train, CALIBRATION_IMAGES, progress=False)
    precision = resolve_precision("auto", None, CPU)
    chosen = {
        "float32": ("none", False),
        f"default ({precision.describe()})": (precision.amp, precision.channels_last),
    }
    start = evaluate_accuracy(model, inputs.evaluation, CPU, progress=False)["top1"]
    rows = []
    for name, (amp, channels_last) in chosen.items():
        trainee = Trainee(model, amp, channels_last)
        before = load()
        tail = steps // 3  # the mean loss over the last third of the steps
        trainee.train(batches[: steps - tail])
        last = trainee.train(batches[steps - tail :])
        scored = evaluate_accuracy(trainee.model, inputs.evaluation, CPU, progress=False)
        rows.append(
            {
                "setting": name,
                "threads": threads,
                "steps": steps,
                "top1_before": round(start, 2),
                "loss_last_third": round(last["loss"], 4),
                "top1_after": round(scored["top1"], 2),
                "test_images": scored["n"],
                "load": [before, load()],
            }
        )
    print(table(rows))
    return rows


def table(rows: list[dict]) -> str:
    """A markdown table of `rows` (the load column as 'a-b')."""
    if not rows:
        return ""
    keys = list(rows[0])
    cells = [[f"{r[k][0]}-{r[k][1]}" if k == "load" else str(r[k]) for k in keys] for r in rows]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--parts", default="precision,data,finetune")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    parts = args.parts.split(",")
    entry = ht2.models.get_entry(NET)
    config = TrainConfig(in_memory=True, seed=0, batch_size=BATCH)
    inputs = build_inputs(args.data, entry, config, WORLD, BATCH)  # decodes once, cached
    inputs.sampler.set_epoch(0)
    batches = list(itertools.islice(inputs.train, (args.rounds + 1) * args.steps))
    result = {
        "command": command_line("python benchmarks/train_speed.py", sys.argv[1:]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
            "amx": torch.cpu._is_amx_tile_supported(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "batch": BATCH,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
    }
    if "precision" in parts:
        result["precision"] = precision_part(batches, threads, args.steps, args.rounds)
    if "data" in parts:
        result["data"] = data_part(args.data, threads, args.steps, args.rounds)
    if "finetune" in parts and args.finetune_steps:
        result["finetune"] = finetune_part(args.data, args.finetune_steps, threads[0])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    markdown = [f"`{result['command']}`\n"]
    for part in ("precision", "data", "finetune"):
        if part in result:
            markdown += [f"{part}:\n", table(result[part])]
    (args.out / "train_speed.md").write_text("\n".join(markdown))
    print(f"wrote {args.out / 'train_speed.json'} and train_speed.md")


if __name__ == "__main__":
    main()
