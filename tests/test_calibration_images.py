"""One calibration-image gatherer, one rule when there are too few: refuse, naming the counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ht2.data.gather import gather_images
from ht2.errors import HT2Error
from ht2.surgery.allocate import allocate
from ht2.surgery.targets import Target


def _batches(*sizes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images = torch.arange(sum(sizes), dtype=torch.float32).view(-1, 1, 1, 1)
    return [(chunk, torch.zeros(len(chunk))) for chunk in images.split(list(sizes))]


def test_the_first_count_images_are_taken_across_batches() -> None:
    images = gather_images(_batches(3, 3, 3), 5)
    assert images.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    plain = gather_images([torch.ones(4, 2), torch.zeros(4, 2)], 6)  # tensors without labels
    assert torch.equal(plain, torch.cat([torch.ones(4, 2), torch.zeros(2, 2)]))


@pytest.mark.parametrize(("sizes", "count", "seen"), [((3, 2), 8, 5), ((), 4, 0)])
def test_too_few_images_are_refused_naming_both_counts(sizes, count, seen) -> None:
    message = f"^only {seen} calibration images, fewer than the {count} needed; "
    with pytest.raises(HT2Error, match=message):
        gather_images(_batches(*sizes), count)


def test_no_images_asked_for_is_refused() -> None:
    with pytest.raises(HT2Error, match="must be at least 1, not 0"):
        gather_images(_batches(4), 0)


def test_sensitivity_allocation_refuses_fewer_images_than_asked() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()
    )
    loader = [(torch.randn(6, 3, 8, 8), torch.zeros(6))]
    example = torch.zeros(1, 3, 8, 8)
    with pytest.raises(HT2Error, match="only 6 calibration images, fewer than the 32 needed"):
        allocate(model, "ht2", Target("params", 2.0), "sensitivity", example, loader, 32)
