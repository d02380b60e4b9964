"""BatchNorm calibration on a data set's training images, for a model or a saved folder.

`recalibrate_batchnorm` (ht2.train.calibrate) does the arithmetic on any batches; this module
picks the images (class-balanced, evaluation transform), checks they suit the model, and for
`calibrate_folder` measures accuracy around it and writes the calibrated folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ht2.errors import HT2Error

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from ht2.models import ModelEntry


DEFAULT_IMAGES = 2048  # BatchNorm statistics settle well before this on CIFAR and ImageNet


@dataclass
class Calibration:
    """What a calibration used: `images` the statistics were estimated on; with `evaluate`,
    the top-1/top-5 accuracy on the evaluation split `before` and `after`."""

    images: int
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None  # calibrate_if_it_helps: held-out losses, verdict

    def to_dict(self) -> dict[str, Any]:
        """Images used, and the accuracies when measured, as `ht2 calibrate --json` prints."""
        result: dict[str, Any] = {"images": self.images}
        if self.before is not None:
            result["before"] = self.before
        if self.after is not None:
            result["after"] = self.after
        if self.decision is not None:
            result["decision"] = self.decision
        return result

    def describe(self) -> str:
        """One line: the images used and, when decided on held-out images, the verdict."""
        text = f"BatchNorm statistics re-estimated on {self.images:,} training images"
        if self.decision is None:
            return text
        d = self.decision
        verdict = "kept" if d["kept"] else "declined: the model's own statistics stay"
        return (
            f"{text}; cross-entropy on {d['held_out']:,} held-out ones "
            f"{d['loss_before']:.4f} -> {d['loss_after']:.4f}, {verdict}"
        )


def calibration_images(
    data: str, entry: ModelEntry, images: int | None = None, augment: bool = False
):
    """The class-balanced training images of `data` for BatchNorm statistics: `images` of them,
    refused naming both counts when the split holds fewer; None: DEFAULT_IMAGES, or the whole
    split when it is smaller. With `augment` they get the training augmentation (the images
    the statistics were estimated on during training), else the evaluation transform."""
    from ht2.data import train_dataset  # torchvision: only when data is read

    dataset = train_dataset(data, entry, augment=augment, limit=images or DEFAULT_IMAGES)
    if images is not None and len(dataset) < images:
        raise HT2Error(
            f"only {len(dataset)} training images in {data}, fewer than the {images} asked "
            f"for calibration; lower calib_images to {len(dataset)} or fewer",
            params="calib_images",
        )
    return dataset


def calibrate_on_train_images(
    model: nn.Module,
    entry: ModelEntry,
    data: str,
    images: int | None,
    batch_size: int,
    workers: int,
    progress: bool = True,
    augment: bool = False,
) -> Calibration:
    """Recalibrate `model`'s BatchNorms on calibration_images(data, entry, images, augment),
    refusing data whose classes are not the model's. Augmented draws are seeded: the same
    call gives the same statistics."""
    import torch

    from ht2.data import make_loader
    from ht2.data.datasets import check_classes
    from ht2.train.calibrate import recalibrate_batchnorm

    dataset = calibration_images(data, entry, images, augment)
    check_classes(dataset, model, entry, entry.name)
    loader = make_loader(dataset, batch_size, workers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the crops and flips, and the loader workers' seeds
        seen = recalibrate_batchnorm(model, loader, len(dataset), progress=progress)
    return Calibration(seen)


HOLD_OUT_EVERY = 5  # calibrate_if_it_helps: every fifth drawn image decides, the rest calibrate


def calibrate_if_it_helps(
    model: nn.Module,
    entry: ModelEntry,
    data: str,
    images: int | None,
    batch_size: int,
    workers: int,
    progress: bool = True,
) -> Calibration:
    """calibrate_on_train_images, but the new statistics are kept only if they lower the
    cross-entropy on held-out training images: every fifth of the `images` drawn decides and
    the others calibrate. A model whose statistics are right already (an uncompressed one, or
    one its recipe calibrated) is then not made worse before fine-tuning starts."""
    import math

    import torch

    from ht2.data import make_loader
    from ht2.data.datasets import check_classes
    from ht2.layers.norms import norm_states
    from ht2.train.calibrate import recalibrate_batchnorm

    dataset = calibration_images(data, entry, images)
    check_classes(dataset, model, entry, entry.name)
    held = list(range(0, len(dataset), HOLD_OUT_EVERY))
    fit = [i for i in range(len(dataset)) if i % HOLD_OUT_EVERY]
    if not fit:
        raise HT2Error(
            f"calibration needs at least 2 training images (one in {HOLD_OUT_EVERY} is held out "
            f"to decide whether it is kept), not {len(dataset)}; give calib_images 2 or more",
            params="calib_images",
        )
    held_out = make_loader(torch.utils.data.Subset(dataset, held), batch_size, workers)
    before = held_out_loss(model, held_out)
    restore = norm_states(model)
    loader = make_loader(torch.utils.data.Subset(dataset, fit), batch_size, workers)
    seen = recalibrate_batchnorm(model, loader, len(fit), progress=progress)
    after = held_out_loss(model, held_out)
    kept = after < before or (math.isnan(before) and not math.isnan(after))
    if not kept:
        restore()
    decision = {"held_out": len(held), "loss_before": before, "loss_after": after, "kept": kept}
    return Calibration(seen, decision=decision)


def held_out_loss(model: nn.Module, batches) -> float:
    """Mean cross-entropy of `model` (eval mode, on its device) over labelled `batches`."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for images, labels in batches:
            if len(labels) == 0:  # every image of the batch failed to decode
                continue
            logits = model(images.to(device))
            total += float(F.cross_entropy(logits, labels.to(device), reduction="sum"))
            count += len(labels)
    return total / max(count, 1)


def train_image_calibrator(
    data: str,
    entry: ModelEntry,
    images: int | None = None,
    batch_size: int = 256,
    workers: int = 2,
    progress: bool = True,
) -> Callable[[nn.Module], int]:
    """A function that recalibrates a model's BatchNorms on calibration_images(data, entry,
    images) and returns the images used; the images are chosen (and a short split refused)
    now, before any model is made, and read again at each call."""
    from ht2.data import make_loader
    from ht2.train.calibrate import recalibrate_batchnorm

    dataset = calibration_images(data, entry, images)
    loader = make_loader(dataset, batch_size, workers)

    def calibrate(model: nn.Module) -> int:
        return recalibrate_batchnorm(model, loader, len(dataset), progress=progress)

    return calibrate


def eval_accuracy(
    model: nn.Module,
    entry: ModelEntry,
    data: str,
    batch_size: int,
    workers: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Top-1/top-5 of `model` on the evaluation split of `data` (decoded once, cached)."""
    from ht2.data import eval_dataset, make_loader
    from ht2.data.datasets import check_classes
    from ht2.metrics.accuracy import evaluate_accuracy

    dataset = eval_dataset(data, entry, cache=True)
    check_classes(dataset, model, entry, entry.name)
    loader = make_loader(dataset, batch_size, workers)
    return evaluate_accuracy(model, loader, "cpu", progress=progress)


def calibrate_folder(
    source: str | os.PathLike,
    out: str | os.PathLike,
    data: str,
    images: int | None = None,
    batch_size: int = 256,
    workers: int = 2,
    evaluate: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    augment: bool = False,
) -> Calibration:
    """Load the compressed folder `source`, recalibrate its BatchNorms on `images` training
    images of `data` (see calibration_images; `augment` as there) and write it to `out` (all or
    nothing; `overwrite` replaces an ht2 folder there). With `evaluate`, accuracy is measured before
    and after, and the copied report.json records the calibrated accuracy."""
    from ht2 import models
    from ht2.io import atomic_directory, check_output_dir, load
    from ht2.io.artefacts import read_report, write_model

    check_output_dir(Path(out), overwrite=overwrite)
    model = load(source)
    entry = models.get_entry(model.ht2_arch["name"])
    before = None
    if evaluate:
        before = eval_accuracy(model, entry, data, batch_size, workers, progress)
    result = calibrate_on_train_images(
        model, entry, data, images, batch_size, workers, progress, augment
    )
    result.before = before
    if evaluate:
        result.after = eval_accuracy(model, entry, data, batch_size, workers, progress)
    report = read_report(source, required=False)
    if report is not None and result.after is not None:
        report.accuracy = {
            "top1": result.after["top1"],
            "top5": result.after["top5"],
            "calibrated_images": result.images,
        }
    with atomic_directory(Path(out), overwrite=overwrite) as staging:
        write_model(model, staging, report)
    return result
