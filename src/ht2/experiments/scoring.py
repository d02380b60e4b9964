"""Scorers for experiments: top-1 of a model on a data set's evaluation split."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from ht2.models import ModelEntry

Scorer = Callable[["nn.Module"], float]


def top1_scorer(
    data: str,
    entry: ModelEntry,
    limit: int | None = None,
    batch_size: int = 256,
    workers: int = 2,
    progress: bool = True,
) -> Scorer:
    """A function giving a model's top-1 (percent) on the evaluation split of `data` (at most
    `limit` images, class-balanced), decoded once and cached; the split is opened now, so a
    missing one fails before any work."""
    from ht2.data import eval_dataset, make_loader
    from ht2.metrics.accuracy import evaluate_accuracy

    loader = make_loader(eval_dataset(data, entry, limit=limit, cache=True), batch_size, workers)

    def score(model: nn.Module) -> float:
        return evaluate_accuracy(model, loader, progress=progress)["top1"]

    return score
