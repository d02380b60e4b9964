"""Accuracy: known answers on toy models, the `ht2 evaluate` CLI, and the real CIFAR-10 figures."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import ht2
from ht2 import models
from ht2.cli.main import build_parser, main
from ht2.metrics.accuracy import evaluate_accuracy
from tests._shared import RESNET_WEIGHTS, TEST_DATA, cifar10_jpeg_dir, shared_file, write_image_tree

CIFAR10_CLASSES = tuple(f"class{i}" for i in range(10))


class FixedScores(nn.Module):
    """Scores every image the same: class i gets score[i]."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = nn.Parameter(torch.tensor(scores), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(len(x), -1)


def _loader(labels: list[int], batch_size: int = 4) -> DataLoader:
    samples = [(torch.zeros(3, 2, 2), label) for label in labels]
    return DataLoader(samples, batch_size=batch_size)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HT2_CACHE_DIR", str(tmp_path / "cache"))


# evaluate_accuracy


def test_always_class_zero_scores_the_share_of_class_zero() -> None:
    model = FixedScores([3.0, 2.0, 1.0]).train()
    result = evaluate_accuracy(model, _loader([0, 1, 2] * 3), progress=False)
    assert result["top1"] == pytest.approx(100 / 3) and result["n"] == 9
    assert result["top5"] is None  # fewer than five classes
    assert result["images_per_second"] > 0 and result["seconds"] > 0
    assert model.training  # the caller's mode is restored


def test_top5_counts_the_five_best_scores(capsys: pytest.CaptureFixture) -> None:
    model = FixedScores([6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    labels = [0, 1, 4, 5, 6, 6, 6, 3]  # top-1 hits 1, top-5 hits 4 of 8
    result = evaluate_accuracy(model, _loader(labels, batch_size=3), progress=False)
    assert (result["top1"], result["top5"], result["n"]) == (12.5, 50.0, 8)
    assert capsys.readouterr().err == ""


def test_empty_batches_are_skipped_and_nothing_scores_zero() -> None:
    empty = (torch.empty(0), torch.empty(0, dtype=torch.long))
    batches = [empty, (torch.zeros(2, 3, 2, 2), torch.tensor([0, 1]))]
    assert evaluate_accuracy(FixedScores([1.0, 0.0]), batches, progress=False)["n"] == 2
    nothing = evaluate_accuracy(FixedScores([1.0, 0.0]), [empty], progress=False)
    assert (nothing["top1"], nothing["top5"], nothing["n"]) == (0.0, 0.0, 0)


# The CLI on a synthetic data set


@pytest.fixture
def tiny_cifar(tmp_path: Path) -> Path:
    return write_image_tree(tmp_path / "tiny", classes=CIFAR10_CLASSES, per_class=2)


@pytest.fixture
def resnet(tmp_path: Path) -> list[str]:
    """MODEL --weights FILE for a ResNet-20 with random weights."""
    path = tmp_path / "random.pth"
    torch.save(models.create("cifar10_resnet20").state_dict(), path)
    return ["cifar10_resnet20", "--weights", str(path)]


def test_cli_json_has_exactly_the_figures(tiny_cifar: Path, resnet: list[str], cli) -> None:
    options = "--workers 0 --batch-size 10 --json".split()
    code, out, _ = cli(["evaluate", *resnet, "--data", str(tiny_cifar), *options])
    assert code == 0
    result = json.loads(out)
    assert list(result) == ["top1", "top5", "n", "images_per_second"]
    assert result["n"] == 20 and 0 <= result["top1"] <= result["top5"] <= 100


def test_cli_summary_of_a_compressed_folder(tiny_cifar: Path, tmp_path: Path, cli) -> None:
    model = models.create("cifar10_resnet20")
    report = ht2.compress(
        model, energy=0.5, include=["layer1.*"], example_input=torch.zeros(1, 3, 32, 32)
    )
    assert report.replaced
    ht2.save(model, tmp_path / "small", report)
    options = "--limit 10 --cache --workers 0".split()
    code, out, _ = cli(["evaluate", str(tmp_path / "small"), "--data", str(tiny_cifar), *options])
    assert code == 0
    assert "(test split, 10 images)" in out and "top-1" in out and "images/s" in out


def test_cli_help_teaches_and_states_defaults(capsys) -> None:
    assert main(["evaluate", "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "--data PATH is an ImageFolder tree" in text
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in commands.choices["evaluate"]._actions:
        if action.dest != "help":
            assert action.help.endswith(")") and (
                "(default: " in action.help or action.help.endswith("(required)")
            ), action.dest


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--split", "val"], r"has no val/ folder \(found: test/, train/\)"),
        (["--batch-size", "0"], "argument --batch-size: expected a positive integer.*got 0"),
        (["--limit", "-5"], "argument --limit: expected a positive integer.*got -5"),
        (["--workers", "-1"], "argument --workers: expected a whole number >= 0, got '-1'"),
    ],
)
def test_cli_bad_inputs_are_one_line_errors(
    tiny_cifar: Path, resnet: list[str], cli, extra: list[str], message: str
) -> None:
    code, out, err = cli(["evaluate", *resnet, "--data", str(tiny_cifar), "--workers", "0", *extra])
    assert code == 2 and out == ""
    assert err.startswith(("ht2: error: ", "ht2 evaluate: error: ")) and err.count("\n") == 1
    assert re.search(message, err)


def test_cli_missing_split_folders(tmp_path: Path, resnet: list[str], cli) -> None:
    data = write_image_tree(tmp_path / "flat", splits=("train",), classes=CIFAR10_CLASSES)
    code, _, err = cli(["evaluate", *resnet, "--data", str(data)])
    assert code == 2 and "has no test/ or val/ folder (found: train/)" in err


def test_cli_cuda_without_gpu(tiny_cifar: Path, resnet: list[str], cli, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = cli(["evaluate", *resnet, "--data", str(tiny_cifar), "--device", "cuda"])
    assert code == 2 and err == (
        "ht2: error: --device cuda: no CUDA GPU is available to torch here; use --device cpu\n"
    )


def test_cli_needs_weights_and_matching_classes(tmp_path: Path, resnet: list[str], cli) -> None:
    three = write_image_tree(tmp_path / "three", splits=("test",))
    code, _, err = cli(["evaluate", "cifar10_resnet20", "--data", str(three)])
    assert code == 2 and "--weights FILE or --pretrained" in err
    code, _, err = cli(["evaluate", *resnet, "--data", str(three), "--workers", "0"])
    assert code == 2 and "has 3 class folders but cifar10_resnet20 predicts 10 classes" in err


def test_cli_nothing_decodable(tmp_path: Path, resnet: list[str], cli) -> None:
    data = write_image_tree(
        tmp_path / "bad", splits=("test",), classes=CIFAR10_CLASSES, per_class=1
    )
    for image in data.glob("test/*/*.png"):
        image.write_bytes(b"not a png")
    code, _, err = cli(["evaluate", *resnet, "--data", str(data), "--workers", "0"])
    assert code == 2 and "could be decoded; nothing was scored" in err


# The real CIFAR-10 test split (10,000 JPEGs) with the shared ResNet-20 weights


@pytest.fixture(scope="session")
def cifar10_jpeg() -> Path:
    return cifar10_jpeg_dir()


@pytest.fixture
def lasting_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoded test split is kept between runs, beside the extracted images."""
    monkeypatch.setenv("HT2_CACHE_DIR", str(TEST_DATA / "cache"))


def _evaluate_json(cli, *argv: str) -> dict:
    code, out, err = cli(
        ["evaluate", *argv, "--cache", "--workers", "2", "--device", "cpu", "--json"]
    )
    assert code == 0, err
    return json.loads(out)


@pytest.mark.slow
def test_resnet20_scores_81_percent_on_the_jpeg_test_split(
    cifar10_jpeg: Path, lasting_cache: None, cli
) -> None:
    weights = shared_file(RESNET_WEIGHTS["cifar10_resnet20"])
    result = _evaluate_json(
        cli, "cifar10_resnet20", "--weights", str(weights), "--data", str(cifar10_jpeg)
    )
    assert result["n"] == 10_000
    assert result["top1"] == pytest.approx(81.03, abs=0.1)  # the reference's 81.03


@pytest.mark.slow
def test_resnet20_compressed_at_0_9_scores_34_percent(
    cifar10_jpeg: Path, lasting_cache: None, tmp_path: Path, cli
) -> None:
    weights = shared_file(RESNET_WEIGHTS["cifar10_resnet20"])
    out = tmp_path / "r20-e0.9"
    options = "--energy 0.9 --no-keep-if-larger --json".split()
    code, _, _ = cli(
        ["compress", "cifar10_resnet20", "--weights", str(weights), "--out", str(out)] + options
    )
    assert code == 0
    result = _evaluate_json(cli, str(out), "--data", str(cifar10_jpeg))
    assert result["n"] == 10_000
    assert result["top1"] == pytest.approx(34.3, abs=0.5)  # measured 34.28
