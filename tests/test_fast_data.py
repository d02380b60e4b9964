"""Fast training inputs: the decoded in-memory split, its batch augmentation, bf16 on CPU."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn

import ht2
from ht2.data import decoded as decoded_module
from ht2.data import eval_dataset
from ht2.data.batch_augment import crop_and_flip, crop_flip_choices
from ht2.data.decoded import decoded_split
from ht2.errors import HT2Error
from ht2.metrics.treatment import native_bfloat16
from ht2.train.batches import MemoryBatches
from ht2.train.distributed import World
from ht2.train.inputs import choose_in_memory
from ht2.train.loop import StepSettings, train_one_epoch
from ht2.train.precision import resolve_precision
from ht2.train.seeding import image_seed
from tests._shared import write_image_tree

CIFAR = ht2.models.get_entry("cifar10_resnet20")
IMAGENET = ht2.models.get_entry("resnet18")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HT2_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_image_tree(tmp_path / "data", classes=("a", "b", "c"), per_class=5)


def _keys(epoch: int, indices) -> list[tuple[int, int]]:
    return [(epoch, index) for index in indices]


def _images(batches) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*batches, strict=True)
    return torch.cat(images), torch.cat(labels)


def test_in_memory_split_serves_the_folder_images_and_labels(tree: Path) -> None:
    split = decoded_split(str(tree), CIFAR, "train")
    files = eval_dataset(str(tree), CIFAR, split="train")
    assert len(split) == len(files) == 15 and split.classes == files.classes
    assert split.pixels.dtype == torch.uint8 and split.nbytes == 15 * 3 * 32 * 32
    images, labels = _images(MemoryBatches(split, _keys(0, range(15)), batch_size=4))
    for index in range(15):
        image, label = files[index]
        assert torch.equal(images[index], image) and labels[index] == label


def test_crop_and_flip_equals_pad_crop_then_flip_per_image() -> None:
    pixels = torch.randint(0, 256, (6, 3, 8, 10), dtype=torch.uint8)
    tops, lefts, flips = (
        [0, 8, 3, 4, 8, 1],
        [8, 0, 5, 4, 2, 7],
        [True, False, True, False, True, False],
    )
    out = crop_and_flip(pixels, tops, lefts, flips)
    for i in range(6):
        expected = TF.crop(TF.pad(pixels[i], [4]), tops[i], lefts[i], 8, 10)
        if flips[i]:
            expected = TF.hflip(expected)
        assert torch.equal(out[i], expected), i
    assert out.dtype == torch.uint8


def test_crop_flip_choices_reach_every_offset_and_flip_about_evenly() -> None:
    seeds = [image_seed(0, 0, index) for index in range(9000)]
    tops, lefts, flips = crop_flip_choices(seeds)
    for drawn, outcomes in ((tops, 9), (lefts, 9), (flips, 2)):
        counts = Counter(drawn)
        assert len(counts) == outcomes
        assert max(counts.values()) < 1.2 * len(seeds) / outcomes


def test_augmentation_depends_on_seed_epoch_and_index_only(tree: Path) -> None:
    split = decoded_split(str(tree), CIFAR, "train")
    alone = MemoryBatches(split, _keys(2, [7]), batch_size=1, seed=5)
    crowd = MemoryBatches(split, _keys(2, [3, 7, 11, 0]), batch_size=4, seed=5)
    image = _images(alone)[0][0]
    assert torch.equal(_images(crowd)[0][1], image)  # the batch around it changes nothing
    assert torch.equal(_images(alone)[0][0], image)  # nor a second pass
    plain = _images(MemoryBatches(split, _keys(2, [7]), batch_size=1))[0][0]
    epochs = [_images(MemoryBatches(split, _keys(e, [7]), 1, seed=5))[0][0] for e in range(3, 9)]
    assert not all(torch.equal(other, image) for other in epochs)
    assert not all(torch.equal(other, plain) for other in [image, *epochs])
    other_seed = [_images(MemoryBatches(split, _keys(2, [7]), 1, seed=s))[0][0] for s in range(6)]
    assert not all(torch.equal(other, image) for other in other_seed)


def test_memory_batches_drop_the_short_last_batch_like_a_loader(tree: Path) -> None:
    split = decoded_split(str(tree), CIFAR, "train")
    kept = MemoryBatches(split, _keys(0, range(15)), batch_size=4)
    dropped = MemoryBatches(split, _keys(0, range(15)), batch_size=4, drop_last=True)
    assert len(kept) == 4 and [len(labels) for _, labels in kept] == [4, 4, 4, 3]
    assert len(dropped) == 3 and [len(labels) for _, labels in dropped] == [4, 4, 4]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_on_the_gpu_equal_those_on_the_cpu(tree: Path) -> None:
    split = decoded_split(str(tree), CIFAR, "train")
    keys = _keys(1, range(15))
    on_cpu = _images(MemoryBatches(split, keys, 4, seed=3))
    on_gpu = _images(MemoryBatches(split.to("cuda"), keys, 4, seed=3))
    assert on_gpu[0].device.type == "cuda"
    assert torch.equal(on_gpu[0].cpu(), on_cpu[0]) and torch.equal(on_gpu[1].cpu(), on_cpu[1])


def test_in_memory_is_chosen_by_size_and_refused_for_imagenet_models(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert choose_in_memory(None, str(tree), CIFAR)
    assert not choose_in_memory(False, str(tree), CIFAR)
    assert not choose_in_memory(None, str(tree), IMAGENET)
    with pytest.raises(HT2Error, match="drop in_memory=True"):
        choose_in_memory(True, str(tree), IMAGENET)
    monkeypatch.setattr(decoded_module, "IN_MEMORY_LIMIT_BYTES", 15 * 3 * 32 * 32 - 1)
    assert not choose_in_memory(None, str(tree), CIFAR)
    assert choose_in_memory(None, str(tree), CIFAR, limit=14)
    assert choose_in_memory(True, str(tree), CIFAR)


def test_precision_defaults_per_device() -> None:
    cpu = resolve_precision("auto", None, CPU)
    assert cpu.channels_last and cpu.amp == ("bf16" if native_bfloat16(CPU) else "none")
    cuda = resolve_precision("auto", None, torch.device("cuda"))
    assert (cuda.amp, cuda.channels_last, cuda.notes) == ("none", False, ())
    half = resolve_precision("fp16", False, CPU)
    assert half.amp == "none" and not half.channels_last and "CUDA only" in half.notes[0]
    assert resolve_precision("bf16", None, CPU).amp == "bf16"


class _Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.conv(x)).relu().mean((2, 3)))


def test_bf16_autocast_on_cpu_computes_in_bfloat16(tree: Path) -> None:
    split = decoded_split(str(tree), CIFAR, "train")
    batches = MemoryBatches(split, _keys(0, range(15)), batch_size=5, seed=0)
    model = _Probe().to(memory_format=torch.channels_last)
    seen: list[torch.dtype] = []
    model.conv.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    world = World(0, 1, 0, CPU)
    settings = StepSettings(CPU, amp="bf16", channels_last=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    before = model.conv.weight.detach().clone()
    result = train_one_epoch(model, batches, optimizer, None, False, scaler, settings, world)
    assert seen == [torch.bfloat16] * 3
    assert torch.isfinite(torch.tensor(result["loss"])) and result["steps"] == 3
    assert model.conv.weight.dtype == torch.float32  # the weights stay float32
    assert not torch.equal(model.conv.weight, before)
