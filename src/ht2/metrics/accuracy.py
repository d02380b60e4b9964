"""Top-1 and top-5 accuracy of a classifier over a loader, with its throughput."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ht2.choices import DTYPES
from ht2.errors import HT2Error

TOP_K = 5


def _total_images(loader: Iterable[Any]) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def evaluate_accuracy(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "evaluating",
    dtype: str = "float32",
) -> dict[str, Any]:
    """Top-1 and top-5 accuracy (percent) of `model` over `loader`'s (images, labels) batches.

    With `dtype` "bfloat16" the model runs under autocast, as `ht2 benchmark --dtype bfloat16`
    times it, so that the accuracy belongs to the speed reported.

    Returns {"top1", "top5", "n", "images_per_second", "seconds"}; top5 is None for fewer than
    five classes. The model is moved to `device` and run in eval mode under inference_mode;
    its train/eval mode is restored afterwards. Empty batches (all images undecodable) are
    skipped; `n` counts the images actually scored, and with none scored (an empty shard,
    say) both accuracies are 0.0.
    """
    if dtype not in DTYPES:
        raise HT2Error(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    was_training = model.training
    model.to(device).eval()
    low = torch.autocast(torch.device(device).type, torch.bfloat16, dtype == "bfloat16")
    top1 = top5 = seen = 0
    classes = 0
    start = time.perf_counter()
    try:
        with (
            torch.inference_mode(),
            tqdm(
                total=_total_images(loader),
                desc=desc,
                unit="img",
                file=sys.stderr,
                disable=None if progress else True,  # None: off when not a terminal
                leave=False,
            ) as bar,
        ):
            for images, labels in loader:
                if len(labels) == 0:
                    continue
                with low:
                    logits = model(images.to(device, non_blocking=True))
                labels = labels.to(logits.device)
                classes = logits.shape[1]
                best = logits.topk(min(TOP_K, classes), dim=1).indices
                hits = best.eq(labels[:, None])
                top1 += int(hits[:, 0].sum())
                top5 += int(hits.any(dim=1).sum())
                seen += len(labels)
                bar.update(len(labels))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    share = 100.0 / seen if seen else 0.0
    return {
        "top1": top1 * share,
        "top5": top5 * share if classes >= TOP_K or seen == 0 else None,
        "n": seen,
        "images_per_second": seen / seconds if seconds > 0 else float("inf"),
        "seconds": seconds,
    }
