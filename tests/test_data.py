"""Data: split detection, transforms, balanced limits, the tensor cache and clear errors."""

from __future__ import annotations

import logging
import tarfile
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from ht2 import HT2Error, models
from ht2.data import cache as cache_module
from ht2.data import eval_dataset, make_loader, train_dataset, train_transform
from ht2.data.subset import balanced_indices
from tests._shared import write_image_tree

CIFAR = models.get_entry("cifar10_resnet20")
IMAGENET = models.get_entry("resnet18")
ALEXNET = models.get_entry("imagenet_alexnet")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache folder, never the user's ~/.cache/ht2."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("HT2_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_image_tree(tmp_path / "data", per_class=4)


def _all(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(images), torch.tensor(labels)


# Splits


def test_default_eval_split_is_test_then_val(tmp_path: Path) -> None:
    with_test = eval_dataset(str(write_image_tree(tmp_path / "t", ("train", "val", "test"))), CIFAR)
    with_val = eval_dataset(str(write_image_tree(tmp_path / "v", ("train", "val"))), CIFAR)
    assert with_test.split == "test" and with_test.location.endswith("test")
    assert with_val.split == "val" and with_val.location.endswith("val")
    assert with_test.classes == ["a", "b", "c"] and len(with_test) == 12
    assert eval_dataset(str(tmp_path / "v"), CIFAR, split="train").split == "train"


def test_missing_split_names_the_folders_found(tree: Path) -> None:
    with pytest.raises(HT2Error, match=r"no val/ folder \(found: test/, train/\)"):
        eval_dataset(str(tree), CIFAR, split="val")
    with pytest.raises(HT2Error, match=r"no test/ or val/ folder \(found: a/, b/, c/\)"):
        eval_dataset(str(tree / "test"), CIFAR)
    with pytest.raises(HT2Error, match=r"no train/ folder \(found: test/\)"):
        train_dataset(str(write_image_tree(tree.parent / "only-test", ("test",))), CIFAR)


def test_unknown_split_and_missing_path(tree: Path) -> None:
    with pytest.raises(HT2Error, match="unknown split 'dev'"):
        eval_dataset(str(tree), CIFAR, split="dev")
    with pytest.raises(HT2Error, match="does not exist"):
        eval_dataset(str(tree / "nowhere"), CIFAR)
    (tree / "notes.txt").write_text("hello")
    with pytest.raises(HT2Error, match="is a file"):
        eval_dataset(str(tree / "notes.txt"), CIFAR)


# Transforms


def test_cifar_eval_equals_to_tensor_and_normalize(tree: Path) -> None:
    dataset = eval_dataset(str(tree), CIFAR)
    image, label = dataset[5]
    path = dataset.base.samples[5][0]
    expected = T.Compose([T.ToTensor(), T.Normalize(CIFAR.mean, CIFAR.std)])(
        Image.open(path).convert("RGB")
    )
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert torch.equal(image, expected) and label == 1


@pytest.mark.parametrize("entry", [IMAGENET, ALEXNET], ids=lambda e: e.name)
def test_imagenet_eval_resizes_and_crops_to_the_entry(tmp_path: Path, entry) -> None:
    tree = write_image_tree(tmp_path / "data", ("val",), per_class=1, size=(80, 60))
    image, _ = eval_dataset(str(tree), entry)[0]
    assert image.shape == entry.input_size
    pixels = eval_dataset(str(tree), entry).base.transform.pixels
    steps = [type(step).__name__ for step in pixels.transforms]
    assert steps == ["Resize", "CenterCrop", "PILToTensor"]
    assert pixels.transforms[0].size == (entry.resize or 256)


def test_train_transforms_augment(tree: Path) -> None:
    steps = train_transform(CIFAR).transforms
    assert isinstance(steps[0], T.RandomCrop) and steps[0].padding == 4
    assert isinstance(steps[1], T.RandomHorizontalFlip)
    assert isinstance(train_transform(IMAGENET).transforms[0], T.RandomResizedCrop)
    augmented = train_dataset(str(tree), CIFAR)
    first, second = augmented[0][0], augmented[0][0]
    assert first.shape == (3, 32, 32) and not torch.equal(first, second)
    plain = train_dataset(str(tree), CIFAR, augment=False)
    assert torch.equal(plain[0][0], plain[0][0])
    assert augmented.split == "train" and len(augmented) == 12


def test_cifar_model_refuses_other_resolutions(tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path / "big", ("test",), per_class=1, size=(64, 48))
    with pytest.raises(HT2Error, match="are 64x48 but cifar10_resnet20 takes 32x32"):
        eval_dataset(str(tree), CIFAR)


# Limit


def test_limit_is_class_balanced_and_deterministic(tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path / "data", ("test",), per_class=10)
    for file in sorted((tree / "test" / "a").iterdir())[2:]:
        file.unlink()  # class a keeps only 2 images
    limited = eval_dataset(str(tree), CIFAR, limit=12)
    assert Counter(limited.targets) == {0: 2, 1: 5, 2: 5}
    again = eval_dataset(str(tree), CIFAR, limit=12)
    assert limited.indices == again.indices
    assert sorted(Counter(eval_dataset(str(tree), CIFAR, limit=7).targets).values()) == [2, 2, 3]
    assert len(eval_dataset(str(tree), CIFAR, limit=1000)) == 22


def test_limit_must_be_positive(tree: Path) -> None:
    with pytest.raises(HT2Error, match="^limit must be a positive"):
        eval_dataset(str(tree), CIFAR, limit=0)
    assert balanced_indices([0, 1, 0, 1], None) == [0, 1, 2, 3]


# Cache


def test_cache_round_trip_equals_uncached(tree: Path, _private_cache: Path, monkeypatch) -> None:
    plain = eval_dataset(str(tree), CIFAR, limit=7)
    cached = eval_dataset(str(tree), CIFAR, limit=7, cache=True)
    assert cached.in_memory and not plain.in_memory
    files = list((_private_cache / "tensors").glob("*.safetensors"))
    assert len(files) == 1 and not list((_private_cache / "tensors").glob(".*"))
    expected_images, expected_labels = _all(plain)
    images, labels = _all(cached)
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    assert cached.classes == plain.classes and cached.split == "test"

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached split was decoded again")

    monkeypatch.setattr(cache_module, "decode_all", no_decoding)
    monkeypatch.setattr("ht2.data.datasets.decode_all", no_decoding)
    reloaded = eval_dataset(str(tree), CIFAR, limit=7, cache=True)
    assert torch.equal(_all(reloaded)[0], expected_images)
    with pytest.raises(AssertionError, match="decoded again"):  # a changed folder: new key
        Image.new("RGB", (32, 32)).save(tree / "test" / "a" / "new.png")
        eval_dataset(str(tree), CIFAR, limit=7, cache=True)


def test_cache_is_keyed_by_transform(tmp_path: Path, _private_cache: Path) -> None:
    tree = write_image_tree(tmp_path / "data", ("val",), per_class=1, size=(80, 60))
    assert eval_dataset(str(tree), IMAGENET, cache=True)[0][0].shape == (3, 224, 224)
    assert eval_dataset(str(tree), ALEXNET, cache=True)[0][0].shape == (3, 227, 227)
    assert len(list((_private_cache / "tensors").glob("*.safetensors"))) == 2


def test_loader_batches_and_skips_workers_for_cached_data(tree: Path) -> None:
    loader = make_loader(eval_dataset(str(tree), CIFAR), batch_size=5, workers=2)
    shapes = [(images.shape, labels.tolist()) for images, labels in loader]
    assert [shape[0][0] for shape in shapes] == [5, 5, 2]
    assert loader.num_workers == 2 and loader.persistent_workers
    assert loader.pin_memory == torch.cuda.is_available()
    cached = make_loader(eval_dataset(str(tree), CIFAR, cache=True), batch_size=5, workers=2)
    assert cached.num_workers == 0


# Bad input


def test_empty_class_folder(tree: Path) -> None:
    (tree / "test" / "empty").mkdir()
    with pytest.raises(HT2Error, match=r"class folder .*test/empty holds no images"):
        eval_dataset(str(tree), CIFAR)


def test_split_without_class_folders(tmp_path: Path) -> None:
    (tmp_path / "data" / "test").mkdir(parents=True)
    with pytest.raises(HT2Error, match="holds no class folders"):
        eval_dataset(str(tmp_path / "data"), CIFAR)


def test_undecodable_image_is_skipped_counted_and_warned_once(
    tree: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    monkeypatch.setattr("ht2.data.image_files._warned", False)
    (tree / "test" / "b" / "broken.png").write_bytes(b"not an image")
    (tree / "test" / "c" / "cut.png").write_bytes(
        (tree / "test" / "c" / "000.png").read_bytes()[:80]
    )
    dataset = eval_dataset(str(tree), CIFAR)
    with caplog.at_level(logging.WARNING, logger="ht2.data"):
        labels = [label for _, batch in make_loader(dataset, 4, workers=0) for label in batch]
    assert len(dataset) == 14 and len(labels) == 12
    skipping = [r for r in caplog.records if "skipping undecodable image" in r.getMessage()]
    assert len(skipping) == 1 and "broken.png" in skipping[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ht2.data"):
        cached = eval_dataset(str(tree), CIFAR, cache=True)
    assert len(cached) == 12
    assert "skipped 2 undecodable image(s) of 14" in caplog.text
    decoded = next(iter(make_loader(dataset, 14, workers=0)))
    assert torch.equal(_all(cached)[0], decoded[0]) and torch.equal(_all(cached)[1], decoded[1])


def test_batch_size_and_workers_must_make_sense(tree: Path) -> None:
    dataset = eval_dataset(str(tree), CIFAR)
    with pytest.raises(HT2Error, match="^batch_size must be a positive number of images, not 0"):
        make_loader(dataset, batch_size=0)
    with pytest.raises(HT2Error, match="^workers must be 0"):
        make_loader(dataset, batch_size=4, workers=-1)


# Other sources


def test_archive_is_extracted_once(tree: Path, _private_cache: Path, monkeypatch) -> None:
    archive = tree.parent / "tiny-data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="tiny-data")  # one folder down, as archives often are
    dataset = eval_dataset(str(archive), CIFAR)
    assert len(dataset) == 12 and dataset.split == "test"
    assert (_private_cache / "extracted" / f"tiny-data-{archive.stat().st_size}").is_dir()

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted twice")

    monkeypatch.setattr(tarfile, "open", no_extraction)
    assert len(eval_dataset(str(archive), CIFAR, split="train")) == 12


def test_cifar10_offline_says_to_use_a_folder(tmp_path: Path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    for data in ("cifar10", f"cifar10:{tmp_path / 'batches'}"):
        with pytest.raises(HT2Error) as caught:
            eval_dataset(data, CIFAR)
        message = str(caught.value)
        assert "\n" not in message and "could not be downloaded" in message
        assert "pass data DIR" in message and "name resolution" in message
    with pytest.raises(HT2Error, match="train and test, not 'val'"):
        eval_dataset("cifar10", CIFAR, split="val")


def _fake_cifar10_batches(root: Path, per_batch: int = 6) -> Path:
    """torchvision's cifar-10-batches-py layout with a few random images per batch."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8),
            "labels": [i % 10 for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": [f"class{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


def test_cifar10_batches_under_a_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args: True)
    root = _fake_cifar10_batches(tmp_path / "batches")
    for data in (f"cifar10:{root}", str(root), str(root / "cifar-10-batches-py")):
        dataset = eval_dataset(data, CIFAR)
        assert dataset.split == "test" and len(dataset) == 6 and len(dataset.classes) == 10
    assert len(train_dataset(f"cifar10:{root}", CIFAR, limit=20)) == 20
    plain = _all(eval_dataset(str(root), CIFAR))
    cached = _all(eval_dataset(str(root), CIFAR, cache=True))
    assert torch.equal(plain[0], cached[0]) and torch.equal(plain[1], cached[1])
    assert plain[0].shape == (6, 3, 32, 32)


# Trust: stray images, broken archives, pickled batches, one-class data


def _stray_image(tree: Path, split: str, size: tuple[int, int] = (64, 48)) -> Path:
    """Add one JPEG of another size to class b of `split` (sorted after the PNGs there)."""
    import numpy as np

    path = tree / split / "b" / "stray.jpg"
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("cache", [False, True])
def test_cifar_eval_refuses_a_stray_image_by_name(tree: Path, cache: bool) -> None:
    stray = _stray_image(tree, "test")
    with pytest.raises(HT2Error) as caught:
        eval_dataset(str(tree), CIFAR, cache=cache)
    assert str(caught.value) == (
        f"image {stray} is 64x48 but cifar10_resnet20 takes 32x32 like the other images in "
        f"{tree / 'test'}; remove it or resize it"
    )


def test_cifar_train_refuses_a_stray_image_by_name(tree: Path) -> None:
    stray = _stray_image(tree, "train", size=(20, 20))  # smaller than a padded random crop
    with pytest.raises(HT2Error, match=f"image {stray} is 20x20 but cifar10_resnet20 takes"):
        train_dataset(str(tree), CIFAR)


def test_cifar_limit_checks_only_the_images_it_keeps(tree: Path) -> None:
    _stray_image(tree, "test")
    dataset = eval_dataset(str(tree), CIFAR, limit=3)
    images, _ = next(iter(make_loader(dataset, 3, workers=0)))
    assert "stray.jpg" not in " ".join(dataset.base.paths()[i] for i in dataset.indices)
    assert images.shape == (3, 3, 32, 32)


def test_cifar_folder_at_another_size_names_its_first_image(tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path / "big", ("test",), per_class=1, size=(64, 48))
    with pytest.raises(HT2Error) as caught:
        eval_dataset(str(tree), CIFAR)
    assert str(caught.value) == (
        f"images in {tree / 'test'} are 64x48 but cifar10_resnet20 takes 32x32 "
        f"(first: {tree / 'test' / 'a' / '000.png'}); give a data set at the model's resolution"
    )


def test_imagenet_pipeline_resizes_a_stray_image(tree: Path) -> None:
    _stray_image(tree, "test", size=(300, 40))
    images, labels = next(iter(make_loader(eval_dataset(str(tree), ALEXNET), 13, workers=0)))
    assert images.shape == (13, *ALEXNET.input_size) and len(labels) == 13


@pytest.mark.parametrize("content", [b"", b"\x00\x01 not a tar" * 400], ids=["empty", "random"])
def test_archive_that_is_no_tar_is_one_line(tmp_path: Path, content: bytes) -> None:
    archive = tmp_path / "data.tar.gz"
    archive.write_bytes(content)
    with pytest.raises(HT2Error) as caught:
        eval_dataset(str(archive), CIFAR)
    assert str(caught.value) == (
        f"cannot extract {archive}: it is not a tar archive (plain, gzip, bzip2 or xz); "
        "check the file, or download it again"
    )


def test_plain_tar_named_tar_gz_still_extracts(tree: Path) -> None:
    archive = tree.parent / "plain.tar.gz"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname="plain")
    assert len(eval_dataset(str(archive), CIFAR)) == 12


def test_corrupt_gzip_archive_is_refused_not_half_extracted(
    tree: Path, _private_cache: Path
) -> None:
    import gzip
    import io

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(tree, arcname="data")
    packed = bytearray(gzip.compress(raw.getvalue()))
    packed[-8] ^= 0xFF  # the CRC that gzip checks only at the end of the stream
    archive = tree.parent / "crc.tar.gz"
    archive.write_bytes(bytes(packed))
    with pytest.raises(HT2Error) as caught:
        eval_dataset(str(archive), CIFAR)
    message = str(caught.value)
    assert message.startswith(f"cannot extract {archive}: it is corrupt or truncated (CRC")
    assert "\n" not in message
    assert not list((_private_cache / "extracted").iterdir())


def test_planted_cifar10_batch_is_never_unpickled(tmp_path: Path, monkeypatch) -> None:
    """torchvision checks each batch's published MD5 before unpickling it."""

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "payload-ran"), "w"))

    root = _fake_cifar10_batches(tmp_path / "batches")
    import pickle

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Payload()))

    def offline(*args, **kwargs):
        raise URLError("offline")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(HT2Error, match="could not be downloaded"):
        eval_dataset(f"cifar10:{root}", CIFAR)
    assert not (tmp_path / "payload-ran").exists()


@pytest.fixture
def one_class(tmp_path: Path) -> Path:
    return write_image_tree(tmp_path / "one", classes=("a",), per_class=2)


def test_evaluate_and_calibrate_refuse_one_class_data_alike(
    one_class: Path, tmp_path: Path, capsys
) -> None:
    import ht2
    from ht2.cli.main import main

    model = models.create("cifar10_resnet20")
    ht2.save(model, tmp_path / "model")
    expected = "has 1 class folders but cifar10_resnet20 predicts 10 classes"
    evaluate = ["evaluate", "cifar10_resnet20", "--pretrained", "--data", str(one_class)]
    calibrate = ["calibrate", str(tmp_path / "model"), "--data", str(one_class)]
    for argv in (evaluate, calibrate + ["--out", str(tmp_path / "out")]):
        assert main([*argv, "--workers", "0"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, argv
    assert not (tmp_path / "out").exists()


def test_check_classes_counts_the_models_own_classes(one_class: Path) -> None:
    from ht2.data.datasets import check_classes

    dataset = train_dataset(str(one_class), CIFAR)
    one = models.create("cifar10_resnet20", num_classes=1)
    check_classes(dataset, one, CIFAR, "one-class model")
    with pytest.raises(HT2Error, match=f"^{dataset.location} has 1 class folders but ten"):
        check_classes(dataset, models.create("cifar10_resnet20"), CIFAR, "ten")
