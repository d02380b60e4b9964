"""Block-output distillation in fine-tuning: which blocks are matched, the loss it adds, the
gradient it gives, and `ht2 finetune --distill-blocks` from the command line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ht2
from ht2.errors import HT2Error
from ht2.train.features import (
    BlockDistillation,
    BlockOutputs,
    block_names,
    block_output_loss,
)
from ht2.train.loop import StepSettings, step_loss
from tests._shared import write_image_tree

WIDTH = 8


class Block(nn.Module):
    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.conv = nn.Conv2d(WIDTH, width, 3, padding=1)
        self.back = nn.Conv2d(width, WIDTH, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.back(torch.relu(self.conv(x)))


class Net(nn.Module):
    """A stem, a stage of two blocks in an nn.Sequential, and a head."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, WIDTH, 3, padding=1)
        self.stage = nn.Sequential(Block(width), Block(width))
        self.head = nn.Linear(WIDTH, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(torch.relu(self.stem(x))).mean((2, 3)))


def _pair(seed: int = 0) -> tuple[Net, Net]:
    torch.manual_seed(seed)
    teacher = Net().eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.stage.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return student, teacher


def test_the_blocks_are_the_elements_of_sequential_stages() -> None:
    assert block_names(Net()) == ["stage.0", "stage.1"]
    names = block_names(ht2.models.create("cifar10_resnet20"))
    assert names == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]


def test_outputs_are_kept_only_while_recording() -> None:
    net = Net()
    keeper = BlockOutputs(net, ["stage.1"])
    x = torch.randn(2, 3, 6, 6)
    net(x)
    assert keeper.outputs == {}
    with keeper.recording() as kept:
        expected = net.stage(torch.relu(net.stem(x)))
        assert torch.equal(kept["stage.1"], expected)
    assert keeper.outputs == {}
    keeper.remove()
    with keeper.recording() as kept:
        net(x)
        assert kept == {}


def test_loss_is_the_mean_relative_error_over_matched_blocks() -> None:
    target = {"a": torch.full((2, 3), 2.0), "b": torch.ones(4)}
    same = {name: t.clone() for name, t in target.items()}
    assert block_output_loss(same, target).item() == 0.0
    off = {"a": torch.full((2, 3), 3.0), "b": torch.ones(4)}  # (1/4 + 0) / 2
    assert block_output_loss(off, target).item() == pytest.approx(0.125)
    wider = {"a": torch.zeros(2, 5), "b": torch.full((4,), 3.0)}  # only b matches: 4/1
    assert block_output_loss(wider, target).item() == pytest.approx(4.0)
    with pytest.raises(HT2Error, match="no block of the student gives an output"):
        block_output_loss({"a": torch.zeros(2, 5)}, target)


def test_a_student_without_the_teachers_blocks_is_refused() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

    with pytest.raises(HT2Error, match="has no blocks"):
        BlockDistillation(Flat(), Net(), 1.0)


def test_step_loss_adds_the_weighted_block_term_and_trains_the_blocks() -> None:
    student, teacher = _pair()
    images = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 3])
    plain = StepSettings(torch.device("cpu"), teacher=teacher, distill_weight=0.5)
    _, base = step_loss(student, images, labels, plain)

    blocks = BlockDistillation(student, teacher, 2.0)
    settings = StepSettings(torch.device("cpu"), teacher=teacher, distill_weight=0.5, blocks=blocks)
    _, loss = step_loss(student, images, labels, settings)
    with torch.no_grad():
        hidden_s = torch.relu(student.stem(images))
        hidden_t = torch.relu(teacher.stem(images))
        terms = []
        for index in range(2):
            hidden_s, hidden_t = student.stage[index](hidden_s), teacher.stage[index](hidden_t)
            terms.append(F.mse_loss(hidden_s, hidden_t) / hidden_t.pow(2).mean())
    expected = base + 2.0 * torch.stack(terms).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert blocks.student.outputs == {} and blocks.teacher.outputs == {}

    loss.backward()
    assert student.stage[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    blocks.remove()
    _, after = step_loss(student, images, labels, plain)
    assert after.item() == pytest.approx(base.item(), rel=1e-6)


def test_block_term_is_zero_for_a_student_equal_to_its_teacher() -> None:
    teacher = Net().eval()
    student = copy.deepcopy(teacher)
    blocks = BlockDistillation(student, teacher, 5.0)
    images, labels = torch.randn(2, 3, 6, 6), torch.tensor([0, 1])
    with_blocks = StepSettings(torch.device("cpu"), teacher=teacher, blocks=blocks)
    without = StepSettings(torch.device("cpu"), teacher=teacher)
    _, a = step_loss(student, images, labels, with_blocks)
    _, b = step_loss(student, images, labels, without)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


def _finetune(source: Path, data: Path, out: Path, *extra: str) -> list[str]:
    argv = ["finetune", str(source), "--data", str(data), "--batch-size", "8", "--workers", "0"]
    argv += ["--calib-images", "8", "--eval-limit", "8", "--epochs", "1", "--max-steps", "1"]
    return [*argv, "--out", str(out), *extra]


def test_cli_matches_the_blocks_and_records_the_weight(tmp_path: Path, cli) -> None:
    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=2)
    model = ht2.models.create("cifar10_resnet20", weights="pretrained")
    source = ht2.save(model, tmp_path / "c", ht2.compress(model, energy=0.8))
    code, _, err = cli(_finetune(source, data, tmp_path / "ft", "--distill-blocks", "0.5"))
    assert code == 0, err
    assert "matching the outputs of 9 blocks to the teacher's" in err
    saved = json.loads((tmp_path / "ft" / "checkpoint" / "state.json").read_text())
    assert saved["meta"]["config"]["distill_blocks"] == 0.5


@pytest.mark.parametrize(
    ("weights", "extra", "message"),
    [
        (
            "pretrained",
            ["--no-distill"],
            "--distill-blocks needs the uncompressed model as teacher: --no-distill was given",
        ),
        (
            None,
            [],
            "/m/ht2.json does not record the uncompressed model's weights (pass "
            "--teacher-weights FILE to distil)",
        ),
        (
            "pretrained",
            ["--distill-blocks", "-1"],
            "argument --distill-blocks: expected a finite number >= 0, got -1",
        ),
    ],
)
def test_cli_bad_block_distillation_is_one_line(tmp_path: Path, cli, weights, extra, message):
    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=2)
    source = ht2.save(ht2.models.create("cifar10_resnet20", weights=weights), tmp_path / "m")
    argv = _finetune(source, data, tmp_path / "ft", *extra)
    if "--distill-blocks" not in extra:
        argv += ["--distill-blocks", "1"]
    code, _, err = cli(argv)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "ft" / "model.safetensors").exists()
