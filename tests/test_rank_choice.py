"""Rank choice beyond one energy: size targets, ranks files, VBMF, rank rounding."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ht2 import HT2Error, compress, load, models, save
from ht2.cli.main import main
from ht2.surgery.targets import TOLERANCE, Target, parse_factor

EXAMPLE = torch.zeros(1, 3, 32, 32)


def _resnet20() -> nn.Module:
    torch.manual_seed(0)
    return models.create("cifar10_resnet20")


@pytest.mark.parametrize("method", ["ht2", "tucker2", "spatial-svd"])
@pytest.mark.parametrize("kind", ["params", "macs"])
@pytest.mark.parametrize("factor", [2.0, 4.0])
def test_target_is_met_within_two_percent(method: str, kind: str, factor: float) -> None:
    target = Target(kind, factor)
    report = compress(_resnet20(), method=method, example_input=EXAMPLE, target=target)
    reached = report.param_reduction if kind == "params" else report.mac_reduction
    assert abs(reached / factor - 1) <= TOLERANCE
    assert report.target["met"] and report.target["reached"] == pytest.approx(reached)
    assert report.energy == report.target["energy"]


def test_target_energy_reproduces_the_same_model() -> None:
    first = compress(_resnet20(), example_input=EXAMPLE, target=Target("params", 3.0))
    again = compress(_resnet20(), example_input=EXAMPLE, energy=first.energy)
    assert [layer.ranks for layer in again.layers] == [layer.ranks for layer in first.layers]
    assert again.params_after == first.params_after


def test_unreachable_target_is_a_clear_error() -> None:
    with pytest.raises(HT2Error, match="out of reach: even rank 1 everywhere gives"):
        compress(_resnet20(), example_input=EXAMPLE, target=Target("params", 1000.0))


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_target_must_be_above_one(factor: float) -> None:
    with pytest.raises(HT2Error, match="reduction factor above 1"):
        Target("params", factor)


def test_factor_accepts_an_x_suffix() -> None:
    assert parse_factor("4x") == parse_factor("4X") == parse_factor(" 4 ") == 4.0
    with pytest.raises(ValueError, match="such as 4 or 4x"):
        parse_factor("four")


def test_given_ranks_are_used_exactly_and_replayed_by_load(tmp_path) -> None:
    ranks = {"layer1.0.conv1": {"r1": 3, "r13": 5, "r3": 4}, "linear": {"r": 2}}
    model = _resnet20()
    report = compress(model, example_input=EXAMPLE, layer_ranks=ranks)
    layers = {layer.name: layer for layer in report.layers}
    assert layers["layer1.0.conv1"].ranks == ranks["layer1.0.conv1"]
    assert layers["linear"].ranks == {"r": 2}
    assert layers["layer1.0.conv1"].energy is None
    assert report.rank_rule == "energy+file"
    save(model, tmp_path / "m", report)
    assert load(tmp_path / "m").layer1[0].conv1.ranks == ranks["layer1.0.conv1"]


@pytest.mark.parametrize(
    ("ranks", "message"),
    [
        ({"layer1.0.conv9": {"r1": 3, "r13": 3, "r3": 3}}, "does not have .*did you mean"),
        ({"layer1.0.conv1": {"r1": 3}}, "needs ranks r1, r13, r3; got r1"),
        ({"layer1.0.conv1": {"r1": 300, "r13": 3, "r3": 3}}, "r1=300 .* larger than .*16"),
        ({"layer1.0.conv1": {"r1": 0, "r13": 3, "r3": 3}}, "must be a positive integer"),
        ({"linear": {"r": 11}}, "r=11 .* larger than"),
    ],
)
def test_bad_ranks_are_refused(ranks: dict, message: str) -> None:
    with pytest.raises(HT2Error, match=message):
        compress(_resnet20(), example_input=EXAMPLE, layer_ranks=ranks)


def test_ranks_for_a_dense_layer_are_refused() -> None:
    with pytest.raises(HT2Error, match="stays dense: matched by --exclude"):
        compress(
            _resnet20(),
            example_input=EXAMPLE,
            exclude=["linear"],
            layer_ranks={"linear": {"r": 2}},
        )


def test_round_ranks_gives_multiples_and_reports_their_cost() -> None:
    plain = compress(_resnet20(), example_input=EXAMPLE, energy=0.6, keep_if_larger=False)
    rounded = compress(
        _resnet20(), example_input=EXAMPLE, energy=0.6, keep_if_larger=False, round_ranks=8
    )
    for before, after in zip(plain.layers, rounded.layers, strict=True):
        for key, value in after.ranks.items():
            assert value % 8 == 0  # every dimension of ResNet-20 is a multiple of 8
            assert value >= before.ranks[key]
    assert rounded.rounding_params == rounded.params_after - plain.params_after
    assert rounded.rounding_params > 0


class LowRankHead(nn.Module):
    """One Linear layer whose weight is rank 4 plus small noise."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        left = torch.randn(96, 4, generator=generator)
        right = torch.randn(4, 128, generator=generator)
        noise = 0.01 * torch.randn(96, 128, generator=generator)
        self.head = nn.Linear(128, 96)
        with torch.no_grad():
            self.head.weight.copy_(left @ right + noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def test_vbmf_rule_finds_the_true_rank_of_a_layer() -> None:
    model = LowRankHead()
    report = compress(model, rank_rule="vbmf", example_input=torch.zeros(1, 128))
    assert report.layers[0].ranks == {"r": 4}
    assert report.energy is None and report.rank_rule == "vbmf"


def test_vbmf_and_a_target_do_not_mix() -> None:
    with pytest.raises(HT2Error, match="cannot be combined with VBMF"):
        compress(_resnet20(), rank_rule="vbmf", example_input=EXAMPLE, target=Target("params", 2))


def test_cli_target_and_ranks_file(tmp_path, capsys) -> None:
    out = tmp_path / "t"
    args = ["compress", "cifar10_resnet20", "--random-init", "--target-params", "3x"]
    code = main([*args, "--out", str(out)])
    assert code == 0
    assert "target 3x fewer params: reached" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert abs(report["param_reduction"] / 3 - 1) <= TOLERANCE
    replay = tmp_path / "r"
    code = main(
        [
            "compress",
            "cifar10_resnet20",
            "--random-init",
            "--ranks",
            str(out / "report.json"),
            "--out",
            str(replay),
        ]
    )
    assert code == 0
    again = json.loads((replay / "report.json").read_text())
    assert [layer["ranks"] for layer in again["layers"]] == [
        layer["ranks"] for layer in report["layers"]
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-params", "0.5"], "reduction factor must be above 1"),
        (["--target-macs", "lots"], "such as 4 or 4x"),
        (["--target-params", "2", "--target-macs", "2"], "not allowed with argument"),
        (["--round-ranks", "0"], "positive whole number or auto"),
        (["--ranks", "missing.json"], "ranks file missing.json does not exist"),
    ],
)
def test_cli_bad_rank_flags(tmp_path, capsys, monkeypatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o"
    code = main(["compress", "cifar10_resnet20", "--random-init", *args, "--out", str(out)])
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()
