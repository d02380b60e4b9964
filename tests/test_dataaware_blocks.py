"""Block-level refit: which modules count as blocks, the fit lowers a block's output error,
a fit that does not help on held-out images is undone, and `--refit blocks` runs end to end."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from ht2 import models
from ht2.dataaware import DataAwareOptions, compress_data_aware
from ht2.dataaware import blocks as block_fit
from ht2.dataaware.blocks import block_error, block_of, fit_block, refit_block
from ht2.errors import HT2Error
from ht2.layers import factorize


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(out)))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.conv(x) * scale


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stage = nn.Sequential(Residual(8), Residual(8))
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage(torch.relu(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


def _randomize_norms(model: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def test_blocks_are_the_elements_of_sequentials_that_hold_more_than_the_layer() -> None:
    net = Net()
    names = ["stem", "stage.0.conv1", "stage.0.conv2", "stage.1.conv2", "head"]
    assert block_of(net, names) == {
        "stage.0.conv1": "stage.0",
        "stage.0.conv2": "stage.0",
        "stage.1.conv2": "stage.1",
    }
    resnet = torchvision.models.resnet18()
    layers = ["conv1", "layer1.0.conv1", "layer2.0.downsample.0", "layer2.0.conv2", "fc"]
    assert block_of(resnet, layers) == {
        "layer1.0.conv1": "layer1.0",
        "layer2.0.downsample.0": "layer2.0",
        "layer2.0.conv2": "layer2.0",
    }
    vgg = torchvision.models.vgg11()
    assert block_of(vgg, ["features.0", "classifier.0"]) == {}  # layers themselves


def test_cifar_resnet_blocks_are_its_residual_blocks() -> None:
    model = models.create("cifar10_resnet20")
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    blocks = list(dict.fromkeys(block_of(model, convs).values()))
    assert len(blocks) == 9
    assert all(isinstance(model.get_submodule(name), nn.Module) for name in blocks)
    assert blocks[0].endswith("0") and blocks == sorted(blocks)


def _compressed_block() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    original = _randomize_norms(Residual(8))
    block = copy.deepcopy(original)
    for name in ("conv1", "conv2"):
        block.set_submodule(name, factorize(getattr(original, name), "ht2", energy=0.5))
    inputs = torch.randn(64, 8, 6, 6)
    with torch.no_grad():
        targets = original(inputs)
    return original, block, inputs, targets


def test_fit_block_lowers_the_output_error_and_moves_only_the_factors() -> None:
    _, block, inputs, targets = _compressed_block()
    norms = {k: v.clone() for k, v in block.state_dict().items() if k.startswith("bn")}
    before = block_error(block, inputs, targets, 16)
    fit_block(block, inputs, targets, iterations=20, batch_size=16)
    after = block_error(block, inputs, targets, 16)
    assert after < 0.9 * before
    for key, value in norms.items():
        assert torch.equal(block.state_dict()[key], value)
    assert all(p.grad is None for p in block.parameters())
    assert all(p.requires_grad for p in block.parameters())


def test_a_block_fit_that_does_not_help_on_held_out_images_is_undone(monkeypatch) -> None:
    original, block, inputs, _ = _compressed_block()
    work = nn.Sequential(copy.deepcopy(block))
    reference = nn.Sequential(original)
    saved = copy.deepcopy(work.state_dict())

    def spoil(block, *args, **kwargs) -> None:
        with torch.no_grad():
            for p in block.parameters():
                p.add_(1.0)

    monkeypatch.setattr(block_fit, "fit_block", spoil)
    result = refit_block(reference, work, "0", inputs[:48], inputs[48:], 5, 16)
    assert result is not None and not result["kept"] and result["after"] > result["before"]
    for key, value in work.state_dict().items():
        assert torch.equal(value, saved[key])


def test_a_block_called_with_more_than_one_argument_is_skipped() -> None:
    class Caller(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stage = nn.Sequential(TwoInputs())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.stage[0](x, scale=2.0)

    model = Caller().eval()
    x = torch.randn(4, 8, 5, 5)
    assert refit_block(model, copy.deepcopy(model), "stage.0", x, x[:0], 3, 2) is None


def test_refit_blocks_gets_closer_to_the_original_than_refit_all() -> None:
    torch.manual_seed(0)
    original = _randomize_norms(Net())
    images = torch.randn(160, 3, 8, 8)
    gaps = {}
    for refit in ("all", "blocks"):
        model = copy.deepcopy(original)
        options = DataAwareOptions(refit=refit, held_out=32, block_iterations=15, bn="never")
        report = compress_data_aware(model, [images], energy=0.5, calib_images=160, options=options)
        gaps[refit] = report.data_aware["gap"]["data_aware"]
        assert ("blocks" in report.data_aware) == (refit == "blocks")
    assert set(report.data_aware["blocks"]) <= {"stage.0", "stage.1"}
    assert gaps["blocks"] < gaps["all"]


@pytest.mark.parametrize("field", ["iterations", "block_iterations"])
def test_iterations_below_one_are_refused(field: str) -> None:
    with pytest.raises(HT2Error, match="iterations must be >= 1"):
        DataAwareOptions(**{field: 0}).check()
