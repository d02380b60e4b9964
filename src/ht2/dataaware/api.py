"""Data-aware compression: the plain decisions and ranks, then factors fitted to what each
layer sees on calibration images, layer by layer in forward order.

Each replaced layer is fitted on the compressed network's own activations (the layers before
it already replaced) against the original network's output of that layer, so errors made
upstream are corrected downstream.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from ht2.choices import HT2Warning
from ht2.data.gather import gather_images
from ht2.dataaware.blocks import block_of, refit_block
from ht2.dataaware.capture import forward_order, layer_input_output
from ht2.dataaware.holdout import (
    agreement,
    calibrate_if_better,
    output_gap,
    outputs_of,
    recalibrate,
)
from ht2.dataaware.images import split_held_out
from ht2.dataaware.patches import flat_weight, layer_patches, output_columns
from ht2.dataaware.refit import refit_all, refit_dense, refit_expand
from ht2.dataaware.stats import LayerStats
from ht2.dataaware.whiten import damped_root, whitened_factorize
from ht2.decomp.threads import threads_for
from ht2.errors import HT2Error
from ht2.layers import FactorizedLayer
from ht2.metrics import count_params, layer_macs, macs_under
from ht2.planning.planner import plan
from ht2.surgery import CompressionReport, LayerReport
from ht2.surgery.apply import apply, in_planned_form
from ht2.surgery.plan_model import Plan
from ht2.surgery.policy import matches

MODES = ("whiten", "refit", "both")
RANK_SOURCES = ("plain", "whitened")
REFITS = ("last", "all", "blocks")
BN_CHOICES = ("auto", "always", "never")


@dataclass(frozen=True)
class DataAwareOptions:
    """How the factors are fitted to data (defaults as on the command line)."""

    mode: str = "both"  # whiten | refit | both
    rank_from: str = "plain"  # ranks of the plain energy rule, or the rule on whitened weights
    refit: str = "all"  # "last": the expand factor and bias; "all": every factor, then those;
    # "blocks": "all", then the factors inside each block fitted to the block's output
    bn: str = "auto"  # BatchNorm re-estimation: kept if it helps on held-out images
    damping: float = 1e-2  # whitening: added to the covariance, times its mean eigenvalue
    ridge: float = 1e-3  # refit: added to sum p p^T, times its mean eigenvalue
    iterations: int = 100  # L-BFGS iterations of the joint refit, per layer
    block_iterations: int = 30  # L-BFGS iterations of the block fit, per block
    refit_dense: bool = True  # with a refit, also refit the layers left dense after those
    held_out: int | None = None  # default min(256, N // 4), taken out of the N images
    batch_size: int = 128

    def check(self) -> None:
        """HT2Error for any value outside its choices or range."""
        for value, choices, flag in (
            (self.mode, MODES, "--data-aware"),
            (self.rank_from, RANK_SOURCES, "--rank-from"),
            (self.refit, REFITS, "--refit"),
            (self.bn, BN_CHOICES, "--bn-calibrate"),
        ):
            if value not in choices:
                raise HT2Error(f"{flag} must be one of {', '.join(choices)}, not {value!r}")
        if self.damping < 0 or self.ridge < 0:
            raise HT2Error("damping and ridge must be >= 0")
        if self.iterations < 1 or self.block_iterations < 1:
            raise HT2Error("iterations must be >= 1")
        if self.batch_size < 1:
            raise HT2Error(f"batch size must be >= 1, not {self.batch_size}")


def _stats_for(
    original: nn.Module, work: nn.Module, name: str, images: torch.Tensor, batch_size: int
) -> LayerStats:
    """Statistics of the dense layer `name`: inputs from `work`, targets from `original`."""
    layer = work.get_submodule(name)
    weight = flat_weight(layer)
    stats = LayerStats.empty(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        for chunk in images.split(batch_size):
            target = layer_input_output(original, name, chunk, want_output=True)
            seen = layer_input_output(work, name, chunk, want_output=False)
            stats.add(layer_patches(layer, seen), output_columns(layer, target))
    return stats


def _calib_error(stats: LayerStats, layer: nn.Module) -> float:
    """Relative output error of a dense or factorized layer on the calibration statistics."""
    with torch.no_grad():
        if isinstance(layer, FactorizedLayer):
            weight, bias = layer.dense_weight(), layer.expand.bias
        else:
            weight, bias = layer.weight, layer.bias
        return stats.rel_error(weight.reshape(weight.shape[0], -1), bias)


MAX_FAN_IN = 16384  # a 16384^2 float64 covariance is 2 GiB: larger layers keep plain factors


def _fit_layer(
    dense: nn.Module,
    plain: FactorizedLayer,
    entry: LayerReport,
    stats: LayerStats,
    energy: float,
    options: DataAwareOptions,
    notes: dict[str, str],
) -> FactorizedLayer:
    """The factors of one layer, from its `plain` ones (a copy), after the steps `options`
    asks for; errors go in `entry`."""
    errors = {"dense": _calib_error(stats, dense)}
    errors["plain"] = _calib_error(stats, plain)
    chosen = plain
    if options.mode in ("whiten", "both"):
        channels = dense.weight.shape[1]
        root = damped_root(stats.channel_covariance(channels), options.damping)
        if root.weak:
            notes[entry.name] = (
                f"{root.weak} of {channels} input-channel covariance eigenvalues were below the "
                f"damping ({options.damping:g} x their mean) that was added to all of them"
            )
        ranks = entry.ranks if options.rank_from == "plain" else None
        whitened = whitened_factorize(dense, entry.method, root, ranks=ranks, energy=energy)
        errors["whiten"] = _calib_error(stats, whitened)
        if options.rank_from == "whitened" or errors["whiten"] <= errors["plain"]:
            chosen = whitened
        else:
            notes[entry.name] = "whitened factors had a larger output error; kept the plain ones"
    if options.mode in ("refit", "both"):
        before, before_error = copy.deepcopy(chosen), _calib_error(stats, chosen)
        refit_expand(chosen, stats, options.ridge)
        errors["refit_last"] = _calib_error(stats, chosen)
        if options.refit in ("all", "blocks"):
            refit_all(chosen, stats, options.ridge, options.iterations)
            errors["refit_all"] = _calib_error(stats, chosen)
        after_error = _calib_error(stats, chosen)
        if after_error > before_error:  # the ridge won over too few samples
            note = (
                f"the refit raised the output error on the calibration images "
                f"({after_error:.4f} > {before_error:.4f}; too few samples for its fan-in?); "
                "kept the factors from before it"
            )
            notes[entry.name] = "; ".join(filter(None, [notes.get(entry.name), note]))
            chosen = before
            errors["kept_before_refit"] = before_error
    entry.calib_errors = errors
    return chosen


def _replace(model: nn.Module, name: str, factors: FactorizedLayer, entry: LayerReport, keep: bool):
    """Swap the factors in (or keep the dense layer when they are not smaller, with `keep`)."""
    size = count_params(factors)
    if keep and size >= entry.params_before:
        entry.method, entry.ranks, entry.params_after = "dense", {}, entry.params_before
        entry.reason = (
            f"factors would have {size:,} parameters, not fewer than {entry.params_before:,}"
        )
        return
    model.set_submodule(name, factors)
    entry.ranks, entry.params_after, entry.rel_error = dict(factors.ranks), size, factors.rel_error


def compress_data_aware(
    model: nn.Module,
    batches: Iterable,
    energy: float = 0.9,
    method: str = "ht2",
    calib_images: int = 512,
    options: DataAwareOptions | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    example_input: torch.Tensor | None = None,
    keep_if_larger: bool = True,
    progress: bool = False,
    **compress_options,
) -> CompressionReport:
    """Compress `model` in place like `ht2.compress`, then fit the factors to calibration data:
    `ht2.apply(model, ht2.plan(model, ...), fit=DataAwareFit(batches, ...))`.

    `compress_options` go to `ht2.plan`, which picks the layers and the plain ranks; see
    DataAwareFit for the fit.
    """
    fit = DataAwareFit(batches, calib_images, options or DataAwareOptions(), energy)
    fit.options.check()
    start = time.perf_counter()
    images = fit.images()
    decided = plan(
        model,
        example_input,
        energy=energy,
        method=method,
        include=include,
        exclude=exclude,
        keep_if_larger=keep_if_larger,
        **compress_options,
    )
    report = fit.run(model, decided, images, example_input, progress)
    report.seconds = time.perf_counter() - start
    return report


@dataclass
class DataAwareFit:
    """The data-aware fitting step of `ht2.apply`: the plan's plain factors, then each layer
    fitted, in forward order, to the original model's outputs on calibration images.

    `batches` yields images or (images, labels) (labels are ignored); the first
    `calib_images` images are used, some of them held out to decide on BatchNorm
    re-estimation and to check the result against the plain factors. Modes: "whiten"
    (factors of the weight whitened by the input-channel covariance), "refit" (least-squares
    refit of the plain factors), "both". `energy` is the rule's energy when the ranks come
    from whitened weights (default: the plan's).
    """

    batches: Iterable
    calib_images: int = 512
    options: DataAwareOptions = field(default_factory=DataAwareOptions)
    energy: float | None = None

    def images(self) -> torch.Tensor:
        return gather_images(self.batches, self.calib_images)

    def __call__(
        self,
        model: nn.Module,
        plan: Plan,
        example_input: torch.Tensor | None = None,
        progress: bool = False,
    ) -> CompressionReport:
        self.options.check()
        start = time.perf_counter()
        report = self.run(model, plan, self.images(), example_input, progress)
        if any(layer.form is not None for layer in plan.layers):
            _put_in_planned_forms(model, plan, report, example_input)
        report.seconds = time.perf_counter() - start
        return report

    def run(
        self,
        model: nn.Module,
        plan: Plan,
        images: torch.Tensor,
        example_input: torch.Tensor | None,
        progress: bool,
    ) -> CompressionReport:
        """Fit `model`'s planned layers on `images` (gathered already)."""
        plain_plan = replace(plan, layers=[replace(layer, fit="plain") for layer in plan.layers])
        plain_plan._built = plan._built
        energy = self.energy
        if energy is None:
            energy = plan.provenance.get("energy") or 0.9
        return _fit_model(
            model,
            plain_plan,
            images,
            energy,
            self.options,
            example_input,
            progress,
        )


def _fit_model(
    model: nn.Module,
    plan: Plan,
    images: torch.Tensor,
    energy: float,
    options: DataAwareOptions,
    example_input: torch.Tensor | None,
    progress: bool,
) -> CompressionReport:
    include, exclude = plan.provenance.get("include"), plan.provenance.get("exclude")
    keep_if_larger = bool(plan.provenance.get("keep_if_larger", True))
    fit, held_out = split_held_out(images, options.held_out)
    original = copy.deepcopy(model).eval()
    plain = copy.deepcopy(model)
    report = apply(plain, plan, example_input=example_input)
    entries = {entry.name: entry for entry in report.replaced}
    was_training = model.training
    model.eval()
    order = forward_order(model, list(entries), images[:1])
    kept_dense = _dense_to_refit(model, report, options, include, exclude)
    if kept_dense:
        order = _after_first(forward_order(model, order + kept_dense, images[:1]), set(entries))
    notes: dict[str, str] = {}
    work = tqdm(
        order, desc="fitting", unit="layer", disable=None if progress else True, leave=False
    )
    state = _Fitting(original, plain, entries, report, fit, energy, options, notes, keep_if_larger)
    by_block = options.refit == "blocks" and options.mode != "whiten"
    ends = _block_ends(model, order, entries) if by_block else {}
    blocks = {}
    for name in work:
        work.set_postfix_str(name, refresh=False)
        _fit_one(model, name, state)
        if name in ends:  # the last layer of a block: fit the block before what follows sees it
            result = refit_block(
                original,
                model,
                ends[name],
                fit,
                held_out,
                options.block_iterations,
                options.batch_size,
            )
            if result is not None:
                blocks[ends[name]] = result
    summary = _held_out_checks(model, original, plain, fit, held_out, options)
    summary.update(options=asdict(options), images=len(fit), notes=notes)
    if blocks:
        summary["blocks"] = blocks
    model.train(was_training)
    _retotal(report, model, example_input)
    report.data_aware = summary
    return report


@dataclass
class _Fitting:
    """What the layer-by-layer fit of one model carries from layer to layer."""

    original: nn.Module
    plain: nn.Module
    entries: dict[str, LayerReport]
    report: CompressionReport
    fit: torch.Tensor
    energy: float
    options: DataAwareOptions
    notes: dict[str, str]
    keep_if_larger: bool


def _fit_one(model: nn.Module, name: str, state: _Fitting) -> None:
    """Fit (or refit, or keep as planned) layer `name` of `model` in place."""
    dense = model.get_submodule(name)
    if type(dense) not in (nn.Conv2d, nn.Linear):
        # A subclass (weight standardisation, dynamic padding, ...): the fit's patches and
        # weights model only what a plain layer computes, so its plain factors stay.
        state.notes[name] = f"{type(dense).__name__} computes more than a plain layer; " + (
            "kept the plain factors" if name in state.entries else "left dense as it was"
        )
        if name in state.entries:
            _replace(
                model,
                name,
                copy.deepcopy(state.plain.get_submodule(name)),
                state.entries[name],
                False,
            )
        return
    fan_in = dense.weight[0].numel()
    if fan_in > MAX_FAN_IN and name not in state.entries:
        state.notes[name] = f"fan-in {fan_in:,} is above {MAX_FAN_IN:,}; left dense as it was"
        return
    if fan_in > MAX_FAN_IN:
        state.notes[name] = (
            f"fan-in {fan_in:,} would need a {fan_in:,} x {fan_in:,} float64 covariance; "
            f"kept the plain factors (the limit is {MAX_FAN_IN:,})"
        )
        _replace(
            model, name, copy.deepcopy(state.plain.get_submodule(name)), state.entries[name], False
        )
        return
    stats = _stats_for(state.original, model, name, state.fit, state.options.batch_size)
    with threads_for(fan_in * fan_in):  # sized by its covariance: small fits, one thread
        if name not in state.entries:
            _refit_kept_dense(model.get_submodule(name), stats, state.report, name, state.options)
            return
        plain_layer = copy.deepcopy(state.plain.get_submodule(name))
        factors = _fit_layer(
            dense, plain_layer, state.entries[name], stats, state.energy, state.options, state.notes
        )
    with torch.no_grad():  # the weight error of the fitted factors, as the report shows it
        gap = torch.linalg.norm(factors.dense_weight() - dense.weight)
        factors.rel_error = float(gap / torch.linalg.norm(dense.weight))
    _replace(model, name, factors.float(), state.entries[name], state.keep_if_larger)


def _block_ends(model: nn.Module, order: list[str], entries: dict) -> dict[str, str]:
    """{last layer of the block in `order`: block} for the blocks holding replaced layers."""
    blocks = block_of(model, order)
    last = {block: name for name, block in blocks.items()}  # later layers overwrite earlier
    holding = {block for name, block in blocks.items() if name in entries}
    return {name: block for block, name in last.items() if block in holding}


def _dense_to_refit(
    model: nn.Module,
    report: CompressionReport,
    options: DataAwareOptions,
    include: list[str] | None,
    exclude: list[str] | None,
) -> list[str]:
    """Layers the plain run left dense (not by the user's globs) that a refit may change:
    Linear and ungrouped Conv2d."""
    if options.mode == "whiten" or not options.refit_dense:
        return []
    names = []
    for entry in report.layers:
        if entry.method != "dense" or matches(entry.name, include, exclude):
            continue
        module = model.get_submodule(entry.name)
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1):
            names.append(entry.name)
    return names


def _after_first(order: list[str], replaced: set[str]) -> list[str]:
    """`order` from the first replaced layer on: a dense layer before it sees exact inputs."""
    first = next((i for i, name in enumerate(order) if name in replaced), len(order))
    return order[first:]


def _refit_kept_dense(
    layer: nn.Module,
    stats: LayerStats,
    report: CompressionReport,
    name: str,
    options: DataAwareOptions,
) -> None:
    """Refit a layer left dense to the original outputs on the compressed network's inputs."""
    entry = next(e for e in report.layers if e.name == name)
    errors = {"dense": _calib_error(stats, layer)}
    if refit_dense(layer, stats, options.ridge):
        errors["refit_dense"] = _calib_error(stats, layer)
    entry.calib_errors = errors


def _held_out_checks(
    model: nn.Module,
    original: nn.Module,
    plain: nn.Module,
    fit: torch.Tensor,
    held_out: torch.Tensor,
    options: DataAwareOptions,
) -> dict:
    """BatchNorm re-estimation as `options.bn` says, and the gap to the original on held-out
    images for the plain and the data-aware model (a warning when data-aware is worse)."""
    summary: dict = {"held_out": len(held_out), "warnings": []}
    if not len(held_out):
        if options.bn == "always":
            recalibrate(model, fit, options.batch_size)
        summary["bn_calibration"] = options.bn == "always"
        return summary
    reference = outputs_of(original, held_out, options.batch_size)
    if options.bn == "auto":
        decision = calibrate_if_better(model, fit, held_out, reference, options.batch_size)
        summary["bn_calibration"] = decision["kept"]
        summary["bn_gap_before"], summary["bn_gap_after"] = (
            decision["gap_before"],
            decision["gap_after"],
        )
    else:
        if options.bn == "always":
            recalibrate(model, fit, options.batch_size)
        summary["bn_calibration"] = options.bn == "always"
    mine = outputs_of(model, held_out, options.batch_size)
    theirs = outputs_of(plain, held_out, options.batch_size)
    summary["gap"] = {
        "plain": output_gap(reference, theirs),
        "data_aware": output_gap(reference, mine),
    }
    summary["agreement"] = {
        "plain": agreement(reference, theirs),
        "data_aware": agreement(reference, mine),
    }
    if summary["gap"]["data_aware"] > summary["gap"]["plain"]:
        warning = (
            f"on {len(held_out)} held-out images the data-aware model is further from "
            f"the original than the plain one (gap {summary['gap']['data_aware']:.4f} > "
            f"{summary['gap']['plain']:.4f}); try more calibration images"
        )
        summary["warnings"].append(warning)
        warnings.warn(warning, HT2Warning, stacklevel=2)  # the CLI prints it once it succeeds
    return summary


def _put_in_planned_forms(
    model: nn.Module, plan: Plan, report: CompressionReport, example_input: torch.Tensor | None
) -> None:
    """Fitted factors come in the handler's default form: run each in the form the plan
    gives it, and count the sizes again (a merged form has other sizes)."""
    entries = {entry.name: entry for entry in report.layers}
    for layer in plan.layers:
        if layer.form is None:
            continue
        module = in_planned_form(model.get_submodule(layer.name), layer)
        model.set_submodule(layer.name, module)
        if layer.name in entries:
            entries[layer.name].params_after = count_params(module)
            entries[layer.name].form = getattr(module, "form", None)
    _retotal(report, model, example_input)


def _retotal(report: CompressionReport, model: nn.Module, example_input: torch.Tensor | None):
    """Totals and per-layer MACs again: --rank-from whitened can change sizes."""
    report.params_after = count_params(model)
    if example_input is None or report.macs_before is None:
        return
    macs = layer_macs(model, example_input)
    report.macs_after = sum(macs.values())
    for entry in report.layers:
        entry.macs_after = macs_under(macs, entry.name)
