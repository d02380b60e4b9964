"""A whole run: data, model, optimiser, epochs, evaluation, checkpoints, log, best model.

Used by `ht2 train` and `ht2 finetune`, on CPU, one GPU or many processes under torchrun.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ht2.errors import BAD_JSON, HT2Error
from ht2.io import check_output_dir
from ht2.models import ModelEntry
from ht2.train.averaging import weight_average
from ht2.train.checkpoint import damaged, load_checkpoint, read_checkpoint_meta, save_checkpoint
from ht2.train.config import TrainConfig
from ht2.train.distributed import (
    World,
    checksums_agree,
    setup_world,
    teardown_world,
    wrap_model,
)
from ht2.train.features import BlockDistillation, block_distillation
from ht2.train.inputs import build_inputs
from ht2.train.lighting import add_lighting_noise
from ht2.train.loop import StepSettings, evaluate, train_one_epoch
from ht2.train.precision import resolve_precision
from ht2.train.schedules import build_optimizer, build_scheduler
from ht2.train.seeding import reseed

CHECKPOINT = "checkpoint"
LOG = "log.jsonl"
SaveBest = Callable[[nn.Module, Path, dict[str, Any]], None]


@dataclass
class RunResult:
    """What a run achieved: the best epoch's accuracy and every epoch's log line."""

    best_top1: float
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1


def say(world: World, message: str) -> None:
    """Print a progress line on rank 0 only (stderr keeps stdout for --json)."""
    if world.is_main:
        print(message, file=sys.stderr, flush=True)


def prepare_output(out: Path, resume: bool, force: bool) -> None:
    """Refuse to mix runs: an existing non-empty folder needs --resume or --force, and --force
    starts again only in a folder ht2 wrote (see check_output_dir)."""
    if resume:
        read_checkpoint_meta(out / CHECKPOINT)
        return
    if out.is_dir() and any(out.iterdir()) and not force:
        raise HT2Error(
            f"output folder {out} exists and is not empty; use resume to "
            "continue its run or force to start again",
            params=("resume", "force"),
        )
    check_output_dir(out, overwrite=force)


def _clear(out: Path) -> None:
    for item in out.iterdir():
        shutil.rmtree(item) if item.is_dir() else item.unlink()


def check_resumable(meta: dict[str, Any], name: str, config: TrainConfig, out: Path) -> None:
    """Refuse to resume a checkpoint of another model or with an incompatible schedule."""
    if meta.get("model") != name:
        raise HT2Error(
            f"the checkpoint in {out} is for another model ({meta.get('model')}), not {name}"
        )
    saved = meta.get("config", {})
    if saved.get("schedule") != config.schedule:
        raise HT2Error(
            f"the checkpoint in {out} was trained with schedule {saved.get('schedule')}; "
            "resume with the same one",
            params="schedule",
        )
    kept_ema = saved.get("ema", 0.0)  # checkpoints from before --ema kept none
    if kept_ema != config.ema:
        raise HT2Error(
            f"the checkpoint in {out} kept a weight average with ema {kept_ema:g}; resume with "
            "the same one"
            if kept_ema
            else f"the checkpoint in {out} kept no weight average; resume without ema",
            params="ema",
        )
    if config.schedule == "onecycle" and saved.get("epochs") != config.epochs:
        raise HT2Error(
            "a one-cycle schedule is planned for the whole run: resume with the same "
            f"epochs {saved.get('epochs')}",
            params="epochs",
        )


def check_same_cycle(planned: int | None, saved: int | None) -> None:
    """Refuse to resume a one-cycle schedule planned over another number of steps (a changed
    --epochs, --max-steps, --batch-size or data set): it would not end where it was aimed."""
    if planned != saved:
        raise HT2Error(
            f"the checkpoint's one-cycle schedule spans {saved} steps but this run's would span "
            f"{planned}: resume with the same epochs, max_steps, batch_size and data",
            params=("epochs", "max_steps", "batch_size"),
        )


def computed_flags(computed: dict[str, Any]) -> str:
    """'--amp bf16 --channels-last --in-memory': the flags that reproduce `computed`."""
    layout = "" if computed["channels_last"] else "no-"
    data = "" if computed["in_memory"] else "no-"
    return f"--amp {computed['amp']} --{layout}channels-last --{data}in-memory"


def started_with(meta: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """How the checkpoint's run computed and read its images. Checkpoints from before this was
    recorded were trained as ht2 did then: autocast on CUDA only, image files every epoch."""
    if "computed" in meta:
        return meta["computed"]
    saved = meta.get("config", {})
    return {
        "amp": saved.get("amp", "none") if device.type == "cuda" else "none",
        "channels_last": bool(saved.get("channels_last")),
        "in_memory": False,
    }


def _per_process_batch(config: TrainConfig, world: World) -> int:
    if config.batch_size % world.size:
        raise HT2Error(
            f"batch_size {config.batch_size} is the global batch and must be "
            f"divisible by the {world.size} torchrun processes",
            params="batch_size",
        )
    return config.batch_size // world.size


def _rewrite_log(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """Keep the log lines of completed epochs (a resumed run rewrites the rest)."""
    if not path.is_file():
        return []
    try:
        kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in kept if line["epoch"] <= upto_epoch]
    except (KeyError, TypeError, *BAD_JSON) as error:
        raise damaged(path, str(error)) from None
    path.write_text("".join(json.dumps(line) + "\n" for line in kept))
    return kept


def fit(
    model: nn.Module,
    entry: ModelEntry,
    data: str,
    config: TrainConfig,
    out: Path,
    save_best: SaveBest,
    teacher: nn.Module | None = None,
    resume: bool = False,
    force: bool = False,
    evaluate_first: bool = False,
) -> RunResult:
    """Train `model` by `config` on `data`, keeping the best epoch in `out` via `save_best`.
    With `config.ema` the weight average is what is evaluated and handed to `save_best`;
    `model` ends with the live weights."""
    world = setup_world(config.device)
    blocks = None
    try:
        blocks = block_distillation(model, teacher, config)
        if blocks is not None:
            say(world, f"matching the outputs of {len(blocks.names)} blocks to the teacher's")
        return _fit(
            model,
            entry,
            data,
            config,
            out,
            save_best,
            teacher,
            resume,
            force,
            evaluate_first,
            world,
            blocks,
        )
    finally:
        if blocks is not None:
            blocks.remove()
        teardown_world(world)


def _fit(
    model,
    entry,
    data,
    config,
    out,
    save_best,
    teacher,
    resume,
    force,
    evaluate_first,
    world: World,
    blocks: BlockDistillation | None,
) -> RunResult:
    if world.is_main:  # one process decides; torchrun stops the others if it fails
        prepare_output(out, resume, force)
    batch = _per_process_batch(config, world)
    precision = resolve_precision(config.amp, config.channels_last, world.device)
    for note in precision.notes:
        say(world, note)
    inputs = build_inputs(data, entry, config, world, batch)
    train_loader, eval_loader, sampler = inputs.train, inputs.evaluation, inputs.sampler
    say(
        world,
        f"{inputs.train_images:,} training images, {inputs.eval_images:,} evaluation images; "
        f"global batch {config.batch_size} = {batch} per process x {world.size} "
        f"process(es) on {world.device}",
    )
    say(world, f"computing in {precision.describe()}; {inputs.describe(config.workers)}")
    computed = {
        "amp": precision.amp,
        "channels_last": precision.channels_last,
        "in_memory": inputs.in_memory,
    }

    model.to(world.device)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    if teacher is not None:
        teacher.to(world.device).eval()
        if precision.channels_last:
            teacher.to(memory_format=torch.channels_last)
    average = weight_average(model, config.ema)
    kept = model if average is None else average.module  # what is evaluated and saved
    if average is not None:
        say(world, f"evaluating and keeping a moving average of the weights (ema {config.ema:g})")
    net = wrap_model(model, world)
    steps_per_epoch = len(train_loader)
    if config.max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps)
    optimizer = build_optimizer(
        model, config.lr, config.momentum, config.nesterov, config.weight_decay
    )
    scheduler, per_step = build_scheduler(
        config.schedule,
        optimizer,
        config.lr,
        config.epochs,
        steps_per_epoch,
        config.milestones,
        config.step_size,
        config.gamma,
    )
    scaler = torch.amp.GradScaler(world.device.type, enabled=precision.amp == "fp16")
    std = tuple(entry.std)
    settings = StepSettings(
        world.device,
        precision.amp,
        precision.channels_last,
        config.clip_grad,
        config.label_smoothing,
        teacher if config.distill else None,
        config.distill_temperature,
        config.distill_weight,
        (lambda x: add_lighting_noise(x, config.lighting, std)) if config.lighting > 0 else None,
        blocks,
        None if average is None else (lambda: average.update_parameters(model)),
    )

    name = getattr(model, "ht2_arch", {}).get("name", type(model).__name__)
    start_epoch, steps_done, best_top1, best_epoch = 0, 0, -1.0, -1
    history: list[dict[str, Any]] = []
    if resume:
        check_resumable(read_checkpoint_meta(out / CHECKPOINT), name, config, out)
        planned = getattr(scheduler, "total_steps", None)
        meta = load_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, scaler, average)
        check_same_cycle(planned, getattr(scheduler, "total_steps", None))
        start_epoch, best_top1, best_epoch = meta["epoch"], meta["best_top1"], meta["best_epoch"]
        # checkpoints from before "steps" was kept: every epoch ran in full then
        steps_done = meta.get("steps", start_epoch * steps_per_epoch)
        history = _rewrite_log(out / LOG, start_epoch) if world.is_main else []
        started = started_with(meta, world.device)
        if started != computed:
            say(
                world,
                f"note: the checkpoint's run trained with {computed_flags(started)}, this one "
                f"with {computed_flags(computed)}, so it will not match an uninterrupted run; "
                "give the former flags to continue as it started",
            )
        say(
            world,
            f"resuming after epoch {start_epoch}, step {steps_done} (best top-1 "
            f"{best_top1:.2f} at epoch {best_epoch})",
        )
    elif world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if force:
            _clear(out)

    if evaluate_first and not resume:
        first = evaluate(model, eval_loader, world, desc="eval (before training)")
        say(
            world,
            f"epoch 0 (before training): top-1 {first['top1']:.2f} %, top-5 {first['top5']:.2f} %",
        )
        history.append({"epoch": 0, "top1": first["top1"], "top5": first["top5"]})
        best_top1, best_epoch = first["top1"], 0
        if world.is_main:
            _append_log(out / LOG, history[-1])
            save_best(model, out, {"epoch": 0, **first})

    for epoch in range(start_epoch, config.epochs):
        remaining = None if config.max_steps is None else config.max_steps - steps_done
        if remaining is not None and remaining <= 0:
            say(world, f"stopping: --max-steps {config.max_steps} reached")
            break
        reseed(config.seed + epoch)
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        trained = train_one_epoch(
            net,
            train_loader,
            optimizer,
            scheduler,
            per_step,
            scaler,
            settings,
            world,
            max_steps=remaining,
            desc=f"epoch {epoch + 1}/{config.epochs}",
        )
        steps_done += trained["steps"]
        if not per_step:
            scheduler.step()
        scored = evaluate(kept, eval_loader, world, desc=f"eval {epoch + 1}")
        line = {
            "epoch": epoch + 1,
            "lr": lr,
            "loss": trained["loss"],
            "train_top1": trained["top1"],
            "top1": scored["top1"],
            "top5": scored["top5"],
            "seconds": trained["seconds"],
            "images_per_second": trained["images_per_second"],
        }
        history.append(line)
        improved = scored["top1"] > best_top1
        if improved:
            best_top1, best_epoch = scored["top1"], epoch + 1
        say(
            world,
            f"epoch {epoch + 1}/{config.epochs}: loss {trained['loss']:.4f}, top-1 "
            f"{scored['top1']:.2f} %, top-5 {scored['top5']:.2f} %, "
            f"{trained['seconds']:.0f} s ({trained['images_per_second']:.0f} img/s)"
            + (" *best*" if improved else ""),
        )
        if world.is_main:
            _append_log(out / LOG, line)
            if improved:
                save_best(kept, out, {"epoch": epoch + 1, **scored})
            meta = {
                "model": name,
                "epoch": epoch + 1,
                "steps": steps_done,
                "best_top1": best_top1,
                "best_epoch": best_epoch,
                "config": config.to_dict(),
                "computed": computed,
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            save_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, scaler, meta, average)

    agree, sums = checksums_agree(model, world)
    if world.distributed:
        if not agree:
            raise HT2Error(f"the {world.size} processes ended with different weights: {sums}")
        say(world, f"all {world.size} processes hold identical weights (checksum {sums[0]:.6f})")
    say(world, f"best top-1 {best_top1:.2f} % at epoch {best_epoch}; model in {out}")
    return RunResult(best_top1, best_epoch, history, world.size)


def _append_log(path: Path, line: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
