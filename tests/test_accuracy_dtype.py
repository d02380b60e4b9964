"""`evaluate_accuracy(dtype=...)` and `ht2 evaluate --dtype`: accuracy in the dtype timed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ht2.cli.main import main
from ht2.errors import HT2Error
from ht2.metrics.accuracy import evaluate_accuracy


class Spy(nn.Module):
    """A classifier that notes whether autocast ran it, and in which dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 6)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        self.seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(5, 4, generator=generator), torch.arange(5)) for _ in range(2)]


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("float32", (False, torch.float32)), ("bfloat16", (True, torch.bfloat16))],
)
def test_accuracy_runs_the_model_in_the_dtype_asked(dtype: str, expected: tuple) -> None:
    model = Spy()
    result = evaluate_accuracy(model, _batches(), progress=False, dtype=dtype)
    assert model.seen == [expected, expected] and result["n"] == 10


def test_bfloat16_accuracy_is_close_to_float32_on_a_stable_model() -> None:
    model = Spy()
    with torch.no_grad():
        model.linear.weight.copy_(torch.eye(6, 4) * 10)
    batches = [(torch.eye(4)[torch.arange(5) % 4], torch.arange(5) % 4)]
    full = evaluate_accuracy(model, batches, progress=False)
    low = evaluate_accuracy(model, batches, progress=False, dtype="bfloat16")
    assert full["top1"] == low["top1"] == 100.0


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(HT2Error, match="dtype must be one of float32, bfloat16"):
        evaluate_accuracy(Spy(), _batches(), progress=False, dtype="float16")


def test_cli_unknown_dtype_is_one_line(capsys) -> None:
    assert main(["evaluate", "cifar10_resnet20", "--data", "x", "--dtype", "float16"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'float16'" in err and len(err.strip().splitlines()) == 1
