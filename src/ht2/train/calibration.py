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

if TYPE_CHECKING:
    from torch import nn

    from ht2.models import ModelEntry


@dataclass
class Calibration:
    """What a calibration used: `images` the statistics were estimated on, out of `available`
    training images (fewer than asked when the data set is small); with `evaluate`, the
    top-1/top-5 accuracy on the evaluation split `before` and `after`."""

    asked: int
    available: int
    images: int
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None

    def shortfall(self) -> str | None:
        """A note when the data set held fewer training images than asked, else None."""
        if self.available >= self.asked:
            return None
        return f"only {self.available} training images available for calibration"

    def to_dict(self) -> dict[str, Any]:
        """Images used, and the accuracies when measured, as `ht2 calibrate --json` prints."""
        result: dict[str, Any] = {"images": self.images}
        if self.before is not None:
            result["before"] = self.before
        if self.after is not None:
            result["after"] = self.after
        return result


def calibrate_on_train_images(
    model: nn.Module,
    entry: ModelEntry,
    data: str,
    images: int,
    batch_size: int,
    workers: int,
    progress: bool = True,
) -> Calibration:
    """Recalibrate `model`'s BatchNorms on `images` class-balanced training images of `data`
    (evaluation transform), refusing data whose classes are not the model's."""
    from ht2.data import make_loader, train_dataset  # torchvision: only when data is read
    from ht2.data.datasets import check_classes
    from ht2.train.calibrate import recalibrate_batchnorm

    dataset = train_dataset(data, entry, augment=False, limit=images)
    check_classes(dataset, model, entry, entry.name)
    loader = make_loader(dataset, batch_size, workers)
    used = recalibrate_batchnorm(model, loader, len(dataset), progress=progress)
    return Calibration(asked=images, available=len(dataset), images=used)


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
    images: int = 2048,
    batch_size: int = 256,
    workers: int = 2,
    evaluate: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Calibration:
    """Load the compressed folder `source`, recalibrate its BatchNorms on `images` training
    images of `data` and write it to `out` (all or nothing; `overwrite` replaces an ht2
    folder there). With `evaluate`, accuracy is measured before and after, and the copied
    report.json records the calibrated accuracy."""
    from ht2 import models
    from ht2.io import atomic_directory, check_output_dir, load
    from ht2.io.artefacts import read_report, write_model

    check_output_dir(Path(out), overwrite=overwrite)
    model = load(source)
    entry = models.get_entry(model.ht2_arch["name"])
    before = None
    if evaluate:
        before = eval_accuracy(model, entry, data, batch_size, workers, progress)
    result = calibrate_on_train_images(model, entry, data, images, batch_size, workers, progress)
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
