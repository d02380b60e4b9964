"""One call from a trained model to a compressed one by a recipe, every step in the report.

    report = compress_with_recipe(model, "best", target=Target("params", 4), data="cifar10/",
                                  example_input=torch.zeros(1, 3, 32, 32))
    report.pipeline["steps"]   # allocate, factors, batchnorm: what ran, on how many images

`ht2 compress` is this call behind its flags; the benchmarks make it too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.models import ModelEntry, get_entry
from ht2.planning.planner import plan as make_plan
from ht2.planning.rounding import AutoRounding, is_auto
from ht2.recipes.recipe import Recipe, get_recipe
from ht2.surgery.allocate import Allocation, allocate
from ht2.surgery.apply import apply
from ht2.surgery.latency_aware import FormTiming, fastest_forms
from ht2.surgery.plan_model import Plan
from ht2.surgery.report import CompressionReport
from ht2.surgery.sensitivity import SensitivityOptions
from ht2.surgery.targets import Target
from ht2.train.calibration import DEFAULT_IMAGES

LOADER_BATCH = 256
STRICT_STEPS = ("sensitivity allocation", "data-aware")  # these refuse to run on fewer images


class TrainImages:
    """Training images for the data steps: a data folder read with the model's registry
    entry (each step takes its own class-balanced subset), or batches given by the caller."""

    def __init__(self, data: Any, entry: ModelEntry | None, workers: int = 2) -> None:
        self.data = data
        self.entry = entry
        self.workers = workers
        self.is_path = isinstance(data, (str, os.PathLike))
        if self.is_path and entry is None:
            raise HT2Error(
                "reading training images from a data folder needs the model's registry entry "
                "(its input transforms): build the model with ht2.models.create, pass entry=, "
                "or pass batches of images as data"
            )
        if self.is_path:
            from ht2.data.sources import resolve

            resolve(str(data))  # a missing or unreadable folder is refused before any work

    def dataset(self, count: int):
        from ht2.data import train_dataset  # torchvision: only when data is read

        return train_dataset(str(self.data), self.entry, augment=False, limit=count)

    def loader(self, count: int) -> Iterable:
        """`count` training images in batches (a path), or the caller's batches as given."""
        if not self.is_path:
            return self.data
        from ht2.data import make_loader

        return make_loader(self.dataset(count), LOADER_BATCH, workers=self.workers)

    def check_counts(self, recipe: Recipe) -> None:
        """HT2Error naming the counts when the folder has fewer images than a step needs."""
        needed = {
            step: count
            for step, count in recipe.data_steps.items()
            if step.startswith(STRICT_STEPS)
        }
        if not self.is_path or not needed:
            return
        available = len(self.dataset(max(needed.values())))
        short = {step: count for step, count in needed.items() if count > available}
        if not short:
            return
        wanted = ", ".join(f"{step} {count}" for step, count in needed.items())
        raise HT2Error(
            f"only {available} training images in {self.data}, fewer than these steps need: "
            f"{wanted} images; lower calib_images to {available} or fewer, or give more images",
            params="calib_images",
        )


def resolve_recipe(recipe: str | Recipe) -> Recipe:
    """A Recipe from itself or its name."""
    return recipe if isinstance(recipe, Recipe) else get_recipe(recipe)


def check_rank_choice(recipe: Recipe, compress_options: dict[str, Any]) -> None:
    """An allocation chooses every layer's ranks: refuse ranks given another way as well."""
    rule = compress_options.get("rank_rule", "energy")
    given = bool(compress_options.get("layer_ranks")) or rule != "energy"
    if recipe.allocate != "uniform" and given:
        fix = "" if "allocate" in recipe.overrides else ", or give allocate uniform"
        raise HT2Error(
            f"{recipe.setting('allocate')} chooses every layer's ranks; do not combine it with "
            f"layer_ranks or rank_rule vbmf{fix}",
            params=("recipe", "allocate", "layer_ranks", "rank_rule"),
        )


def compress_with_recipe(
    model: nn.Module,
    recipe: str | Recipe = "best",
    *,
    target: Target | None = None,
    data: str | os.PathLike | Iterable | None = None,
    energy: float = 0.9,
    method: str = "ht2",
    example_input: torch.Tensor | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    keep_if_larger: bool = True,
    entry: ModelEntry | None = None,
    workers: int = 2,
    progress: bool = False,
    plan: Plan | None = None,
    forms: FormTiming | None = None,
    allocation_cache: dict | None = None,
    speedup: float | None = None,
    min_energy: float | None = None,
    **compress_options: Any,
) -> CompressionReport:
    """Compress `model` in place by `recipe` ("paper", "best" or a Recipe) and return the
    report, with `report.pipeline` naming the recipe, what the caller changed in it, and every
    step that ran (allocation, factors, BatchNorm) with its images and seconds.

    `target` is a size to reach (the best recipe needs one; without it `energy` applies to
    every layer). `data` is a data folder (train/ read with the model's registry entry, or
    `entry`) or batches of images, for the steps that need them. `compress_options` go to
    `ht2.plan` (rank_rule, layer_ranks, round_ranks); the recipe gives refine_sweeps.
    A given `plan` (see plan_with_recipe) replaces the deciding steps: its layers are applied
    as they are, fitted as each entry says, then the recipe's BatchNorm step runs. With
    `forms`, each factorized layer is then put in its fastest form timed that way
    (ht2.surgery.latency_aware), recorded in `report.latency_aware`. A `speedup` target
    replaces the allocation: ranks, forms and dense layers chosen by latencies timed as
    `forms` says (ht2.planning.speed; the report's provenance["speed_target"] says what it
    reached; `min_energy` keeps every factorized layer at that energy or more). An
    `allocation_cache`
    dict kept by the caller holds the sensitivity measurements, so that further targets on the
    same model and images reuse them (ht2.surgery.allocate.allocate's `cache`).
    """
    recipe, images = _prepare(
        model,
        recipe,
        compress_options,
        target is not None or plan is not None or speedup is not None,
        data,
        example_input,
        forms,
        entry,
        workers,
        (target, speedup, plan),
    )
    start = time.perf_counter()
    steps: list[dict[str, Any]] = []
    allocation = None
    if plan is None:
        plan, allocation = _decide(
            model,
            recipe,
            target,
            energy,
            method,
            example_input,
            images,
            progress,
            allocation_cache,
            (speedup, forms, min_energy),
            include=include,
            exclude=exclude,
            keep_if_larger=keep_if_larger,
            **compress_options,
        )
    report = _apply(model, plan, recipe, energy, example_input, images, progress)
    # the decomposition happens while planning: report.seconds covers it, not the allocation
    allocated = allocation.seconds if allocation is not None else 0.0
    report.seconds = time.perf_counter() - start - allocated
    if allocation is not None:
        allocation.annotate(report)
        steps.append(_allocation_step(allocation, report, recipe))
    if "speed_target" in report.provenance:
        steps.append(_speed_step(report.provenance["speed_target"]))
    steps.append(_factors_step(report, recipe))
    if report.data_aware is not None:
        steps.append(_held_out_step(report, recipe))
    if recipe.calibrate:
        explicit = "calibrate_images" in recipe.overrides
        steps.append(_calibrate(model, images, recipe.calibrate_images if explicit else None))
    if forms is not None and speedup is None:  # a speed target chose the forms already
        steps.append(_forms(model, report, example_input, forms))
    report.pipeline = {
        "recipe": recipe.name,
        "overrides": {name: _jsonable(getattr(recipe, name)) for name in recipe.overrides},
        "settings": {k: v for k, v in recipe.to_dict().items() if k not in ("name", "overrides")},
        "steps": steps,
        "seconds": time.perf_counter() - start,
    }
    return report


def plan_with_recipe(
    model: nn.Module,
    recipe: str | Recipe = "best",
    *,
    target: Target | None = None,
    data: str | os.PathLike | Iterable | None = None,
    energy: float = 0.9,
    method: str = "ht2",
    example_input: torch.Tensor | None = None,
    entry: ModelEntry | None = None,
    workers: int = 2,
    progress: bool = False,
    forms: FormTiming | None = None,
    allocation_cache: dict | None = None,
    speedup: float | None = None,
    min_energy: float | None = None,
    **plan_options: Any,
) -> Plan:
    """The deciding half of compress_with_recipe: the recipe's allocation (reading `data`
    where it needs images, reusing `allocation_cache`'s measurements) and every layer's ranks,
    as a Plan, with each layer's fastest form when `forms` says how to time them (a
    `speedup` target chooses ranks and forms by those timings instead); `model` is left
    unchanged."""
    recipe, images = _prepare(
        model,
        recipe,
        plan_options,
        target is not None or speedup is not None,
        data,
        example_input,
        forms,
        entry,
        workers,
        (target, speedup, None),
    )
    decided, _ = _decide(
        model,
        recipe,
        target,
        energy,
        method,
        example_input,
        images,
        progress,
        allocation_cache,
        (speedup, forms, min_energy),
        **plan_options,
    )
    if forms is not None and speedup is None:
        from ht2.planning.forms import plan_forms

        plan_forms(model, decided, example_input, forms)
    return decided


def _check_forms(forms: FormTiming | None, example_input: torch.Tensor | None) -> None:
    if forms is not None and example_input is None:
        raise HT2Error(
            "timing forms needs an example input of the model's shape",
            params=("forms", "example_input"),
        )


def _forms(
    model: nn.Module,
    report: CompressionReport,
    example_input: torch.Tensor,
    timing: FormTiming,
) -> dict[str, Any]:
    """Each factorized layer put in its fastest form, recorded in the report."""
    start = time.perf_counter()
    choices = fastest_forms(model, report, example_input, timing)
    return {
        "step": "forms",
        "device": choices.device,
        "batch_size": choices.batch_size,
        "kept": choices.kept,
        "seconds": time.perf_counter() - start,
    }


def _prepare(
    model: nn.Module,
    recipe: str | Recipe,
    options: dict[str, Any],
    has_target: bool,
    data: Any,
    example_input: torch.Tensor | None,
    forms: FormTiming | None,
    entry: ModelEntry | None,
    workers: int,
    targets: tuple[Target | None, float | None, Plan | None] = (None, None, None),
) -> tuple[Recipe, TrainImages | None]:
    """The recipe, checked against what was given (one-line HT2Errors before any work), and
    the training images its steps read."""
    recipe = resolve_recipe(recipe)
    _refuse_sweeps(options)
    _check_speedup(*targets, options)
    recipe.check(has_target, data is not None)
    check_rank_choice(recipe, options)
    _check_forms(forms, example_input)
    return recipe, _images(model, data, entry, workers, recipe)


def _check_speedup(
    target: Target | None, speedup: float | None, plan: Plan | None, options: dict[str, Any]
) -> None:
    """A speed target chooses every layer's ranks: refuse a size target, a plan or ranks too."""
    if speedup is None:
        return
    clashing = [
        name
        for name, given in (
            ("target", target is not None),
            ("plan", plan is not None),
            ("layer_ranks", bool(options.get("layer_ranks"))),
            ("rank_rule vbmf", options.get("rank_rule", "energy") != "energy"),
            ("layer_energies", bool(options.get("layer_energies"))),
        )
        if given
    ]
    if clashing:
        raise HT2Error(
            f"a speed target chooses every layer's ranks; do not also give {', '.join(clashing)}",
            params=("speedup", *clashing),
        )
    if not speedup > 1.0:
        raise HT2Error(f"a speed target must be above 1, got {speedup:g}", params="speedup")


def _refuse_sweeps(options: dict[str, Any]) -> None:
    if "refine_sweeps" in options:
        raise HT2Error(
            "refine_sweeps comes from the recipe: give recipe=get_recipe(name).with_choices("
            "refine_sweeps=N) instead",
            params="refine_sweeps",
        )


def _images(
    model: nn.Module, data: Any, entry: ModelEntry | None, workers: int, recipe: Recipe
) -> TrainImages | None:
    if data is None:
        return None
    if entry is None and isinstance(data, (str, os.PathLike)):
        entry = _registry_entry(model)
    images = TrainImages(data, entry, workers)
    images.check_counts(recipe)
    return images


def _decide(
    model: nn.Module,
    recipe: Recipe,
    target: Target | None,
    energy: float,
    method: str,
    example_input: torch.Tensor | None,
    images: TrainImages | None,
    progress: bool,
    cache: dict | None,
    speed: tuple[float | None, FormTiming | None, float | None] = (None, None, None),
    **plan_options: Any,
) -> tuple[Plan, Allocation | None]:
    """The recipe's allocation (for a target; for a speed target, the latency planner) and
    the plan it leads to, the fit the recipe asks for marked on every layer."""
    if is_auto(plan_options.get("round_ranks")):

        def decide(round_ranks: int) -> tuple[Plan, Allocation | None]:
            return _decide(
                model,
                recipe,
                target,
                energy,
                method,
                example_input,
                images,
                progress,
                cache,
                speed,
                **{**plan_options, "round_ranks": round_ranks},
            )

        return _decide_rounded(decide, model, example_input, speed, plan_options["round_ranks"])
    options = {
        "include": None,
        "exclude": None,
        "keep_if_larger": True,
        **plan_options,
        "refine_sweeps": recipe.refine_sweeps,
        "progress": progress,
    }
    allocation = None
    speedup, timing, min_energy = speed
    if speedup is not None:
        decided = _speed_plan(model, example_input, method, speed, options)
    else:
        if target is not None:
            allocation = _allocate(
                model, recipe, method, target, example_input, images, options, cache
            )
            options.update(allocation.compress_kwargs())
        decided = make_plan(model, example_input, energy=energy, method=method, **options)
    if allocation is not None:
        decided.provenance["allocation"] = allocation.name
    if recipe.data_aware:
        for layer in decided.layers:
            layer.fit = "data-aware"
    data = images.data if images is not None and images.is_path else None
    decided.provenance["data"] = os.fspath(data) if data is not None else None
    return decided, allocation


def _decide_rounded(
    decide: Callable[[int], tuple[Plan, Allocation | None]],
    model: nn.Module,
    example_input: torch.Tensor | None,
    speed: tuple[float | None, FormTiming | None, float | None],
    rounding: Any,
) -> tuple[Plan, Allocation | None]:
    """round_ranks="auto": `decide` without rounding, time the planned layers at each rank
    multiple where `rounding`'s or `speed`'s FormTiming says (default: CPU, batch 1, float32
    eager), then `decide` again with the fastest multiple; the plan's provenance records the
    timings."""
    from ht2.planning.rounding import choose_round_ranks

    speedup, timing, _ = speed
    if isinstance(rounding, AutoRounding) and rounding.timing is not None:
        timing = rounding.timing
    if speedup is not None:
        raise HT2Error(
            "a speed target times its own ranks: give round_ranks as a number, not auto",
            params=("round_ranks", "speedup"),
        )
    if example_input is None:
        raise HT2Error(
            "round_ranks auto times the planned layers: give an example input",
            params=("round_ranks", "example_input"),
        )
    first, allocation = decide(1)
    choice = choose_round_ranks(model, first, example_input, timing)
    decided = first
    if choice.multiple > 1:
        decided, allocation = decide(choice.multiple)
    decided.provenance["round_ranks_auto"] = choice.to_dict()
    return decided, allocation


def _speed_plan(
    model: nn.Module,
    example_input: torch.Tensor | None,
    method: str,
    speed: tuple[float, FormTiming | None, float | None],
    options: dict[str, Any],
) -> Plan:
    """The latency planner's plan (no energy below `speed`'s min_energy); its rounds time
    plain one-pass factors (timing does not depend on their values), the recipe's sweeps are
    asked of the final plan's entries."""
    from ht2.planning.options import CompressOptions
    from ht2.planning.speed import energy_grid, plan_for_speedup

    speedup, timing, min_energy = speed
    sweeps = options["refine_sweeps"]
    chosen = CompressOptions.of(None, method=method, **{**options, "refine_sweeps": 0})
    energies = energy_grid(min_energy)
    decided = plan_for_speedup(model, example_input, chosen, speedup, timing, energies)
    for layer in decided.layers:
        layer.refine_sweeps = sweeps
    decided.provenance["refine_sweeps"] = sweeps
    return decided


def _speed_step(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": "speed target",
        "target": f"{record['factor']:g}x",
        "reached": record["reached"],
        "met": record["met"],
        "note": record["note"],
        "device": record["device"],
        "batch_size": record["batch_size"],
    }


def _registry_entry(model: nn.Module) -> ModelEntry:
    arch = getattr(model, "ht2_arch", None)
    if not isinstance(arch, dict):
        raise HT2Error(
            "reading training images from a data folder needs the model's registry entry: "
            "build the model with ht2.models.create, pass entry=, or pass batches as data"
        )
    return get_entry(arch["name"])


def _allocate(
    model: nn.Module,
    recipe: Recipe,
    method: str,
    target: Target,
    example_input: torch.Tensor | None,
    images: TrainImages | None,
    options: dict[str, Any],
    cache: dict | None,
) -> Allocation:
    sensitivity = recipe.allocate == "sensitivity"
    return allocate(
        model,
        method,
        target,
        recipe.allocate,
        example_input,
        images.loader(recipe.sensitivity_images) if sensitivity and images else None,
        images=recipe.sensitivity_images,
        include=options["include"],
        exclude=options["exclude"],
        keep_if_larger=options["keep_if_larger"],
        round_ranks=options.get("round_ranks", 1),
        options=SensitivityOptions(
            candidates=recipe.candidates,
            bn_aware=recipe.bn_aware,
            sweeps=recipe.refine_sweeps,
        ),
        progress=options["progress"],
        cache=cache,
    )


def _apply(
    model: nn.Module,
    plan: Plan,
    recipe: Recipe,
    energy: float,
    example_input: torch.Tensor | None,
    images: TrainImages | None,
    progress: bool,
) -> CompressionReport:
    """The plan carried out, with the data-aware fit where its layers ask for one."""
    if not any(layer.fit == "data-aware" for layer in plan.layers):
        return apply(model, plan, example_input=example_input)
    from ht2.dataaware import DataAwareFit, DataAwareOptions

    if images is None:
        raise HT2Error(
            "the plan asks for a data-aware fit, which needs training images: give data=PATH",
            params="data=PATH",
        )
    fit = DataAwareFit(
        images.loader(recipe.data_aware_images),
        recipe.data_aware_images,
        DataAwareOptions(
            mode=recipe.data_aware or "both",
            rank_from=recipe.rank_from,
            refit=recipe.refit,
            bn=recipe.bn_calibrate,
            refit_dense=recipe.refit_dense,
        ),
        energy,
    )
    return apply(model, plan, fit=fit, example_input=example_input, progress=progress)


def _allocation_step(
    allocation: Allocation, report: CompressionReport, recipe: Recipe
) -> dict[str, Any]:
    target = report.target or {}
    step: dict[str, Any] = {
        "step": "allocate",
        "allocation": allocation.name,
        "target": f"{allocation.target.factor:g}x {allocation.target.kind}",
        "reached": target.get("reached"),
        "seconds": allocation.seconds,
    }
    if allocation.name == "uniform":
        step["energy"] = target.get("energy")
    if allocation.name == "sensitivity":
        step["images"] = allocation.details.get("calibration_images")
        step["candidates"] = list(recipe.candidates)
    return step


def _factors_step(report: CompressionReport, recipe: Recipe) -> dict[str, Any]:
    step: dict[str, Any] = {
        "step": "factors",
        "method": report.method,
        "refine_sweeps": report.refine_sweeps,  # the plan's: the recipe's unless a plan was given
        "data_aware": recipe.data_aware if report.data_aware is not None else None,
        "seconds": report.seconds,
    }
    if recipe.data_aware and report.data_aware:
        step["images"] = report.data_aware.get("images")
        step["refit"] = recipe.refit
    return step


def _held_out_step(report: CompressionReport, recipe: Recipe) -> dict[str, Any]:
    summary = report.data_aware or {}
    step: dict[str, Any] = {
        "step": "batchnorm",
        "how": recipe.bn_calibrate,
        "held_out": summary.get("held_out", 0),
        "kept": bool(summary.get("bn_calibration")),
    }
    if "bn_gap_before" in summary:
        step["gap_before"], step["gap_after"] = summary["bn_gap_before"], summary["bn_gap_after"]
    return step


def _calibrate(model: nn.Module, images: TrainImages, count: int | None) -> dict[str, Any]:
    """BatchNorm re-estimation of the plain factors on `count` training images (None: the
    calibration default, or the whole split when smaller); an explicit count the split cannot
    give is refused, as `ht2 calibrate` refuses it."""
    from ht2.train import recalibrate_batchnorm

    start = time.perf_counter()
    if images.is_path:
        from ht2.data import make_loader
        from ht2.data.datasets import check_classes
        from ht2.train.calibration import calibration_images

        dataset = calibration_images(str(images.data), images.entry, count)
        check_classes(dataset, model, images.entry, images.entry.name)
        count = len(dataset)
        batches = make_loader(dataset, LOADER_BATCH, workers=images.workers)
    else:
        batches = images.data
        count = count or DEFAULT_IMAGES
    used = recalibrate_batchnorm(model, batches, count)
    return {
        "step": "batchnorm",
        "how": "calibrate",
        "images": used,
        "seconds": time.perf_counter() - start,
    }


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
