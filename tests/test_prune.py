"""Channel pruning (the rival users weigh decomposition against): which channels can go, exact
surgery, sizes as asked, and folders that reload to the same function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ht2
from ht2.errors import HT2Error
from ht2.metrics.counting import count_params, layer_macs
from ht2.planning.pruning import plan_pruning, prune
from ht2.surgery.channel_chains import ChannelChain, find_channel_chains
from ht2.surgery.prune import apply_pruning, prune_chain

X32 = torch.zeros(1, 3, 32, 32)


def _resnet20() -> nn.Module:
    return ht2.models.create("cifar10_resnet20").eval()


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 with a residual: conv2 consumes one chain and produces the next."""

    def __init__(self, width: int = 8, inner: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, width, 1, bias=True)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        return self.act(x + self.conv3(out))


class Tied(nn.Module):
    """Channels that are not free: one conv feeds an addition, one a Linear, one is called
    twice, and one feeds a depthwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.to_depthwise = nn.Conv2d(4, 4, 1)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.head = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.shared(self.shared(x))
        x = self.depthwise(F.relu(self.to_depthwise(x)))
        return self.head(x.flatten(1))


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.conv(x)
        return x


def test_resnet20_chains_are_the_inner_channels_of_each_block() -> None:
    chains = find_channel_chains(_resnet20())
    blocks = [f"layer{stage}.{block}" for stage in (1, 2, 3) for block in range(3)]
    assert chains == [
        ChannelChain(f"{b}.conv1", f"{b}.bn1", f"{b}.conv2", 16 * 2 ** (int(b[5]) - 1))
        for b in blocks
    ]


def test_bottleneck_gives_two_overlapping_chains() -> None:
    assert find_channel_chains(Bottleneck()) == [
        ChannelChain("conv1", "bn1", "conv2", 6),
        ChannelChain("conv2", "bn2", "conv3", 6),
    ]


def test_tied_channels_are_never_chains() -> None:
    assert find_channel_chains(Tied()) == []


def test_untraceable_model_is_one_line_error() -> None:
    with pytest.raises(HT2Error, match="torch.fx can trace, and Untraceable cannot be"):
        find_channel_chains(Untraceable())


def test_pruning_channels_that_carry_nothing_leaves_the_function_unchanged() -> None:
    """Channels whose BatchNorm scale and shift are zero output zero after ReLU; cutting them
    must change no output (every other channel keeps its exact weights)."""
    model = _resnet20()
    x = torch.randn(4, 3, 32, 32)
    entries = []
    for chain in find_channel_chains(model):
        norm = model.get_submodule(chain.norm)
        dropped = torch.arange(1, chain.channels, 3)
        with torch.no_grad():
            norm.weight[dropped] = 0
            norm.bias[dropped] = 0
        keep = sorted(set(range(chain.channels)) - set(dropped.tolist()))
        entries.append(
            {
                "producer": chain.producer,
                "norm": chain.norm,
                "consumer": chain.consumer,
                "keep": keep,
            }
        )
    with torch.no_grad():
        expected = model(x)
        apply_pruning(model, entries)
        got = model(x)
    assert model.layer3[0].conv1.out_channels == len(entries[-1]["keep"])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_pruning_without_a_norm_slices_bias_and_both_convs() -> None:
    model = nn.Sequential(nn.Conv2d(3, 5, 3, bias=True), nn.ReLU(), nn.Conv2d(5, 2, 1)).eval()
    with torch.no_grad():
        model[0].weight[[0, 3]] = 0
        model[0].bias[[0, 3]] = -1.0  # ReLU(-1) = 0: channels 0 and 3 carry nothing
    x = torch.randn(2, 3, 9, 9)
    (chain,) = find_channel_chains(model)
    assert chain.norm is None
    expected = model(x)
    prune_chain(model, {"producer": "0", "norm": None, "consumer": "2", "keep": [1, 2, 4]})
    assert (model[0].out_channels, model[2].in_channels) == (3, 3)
    torch.testing.assert_close(model(x), expected)


def test_l1_norm_decides_which_filters_stay() -> None:
    model = Bottleneck()
    with torch.no_grad():
        for index, scale in enumerate([0.1, 5.0, 0.2, 4.0, 3.0, 0.3]):
            model.conv1.weight[index] = scale
    plan = plan_pruning(model, 1.6, torch.zeros(1, 8, 5, 5))
    first = plan.entries[0]
    kept = len(first["keep"])
    assert first["keep"] == sorted([1, 3, 4, 5, 2, 0][:kept])


@pytest.mark.parametrize("reduction", [1.5, 2.5, 3.8, 5.6, 8.4])
def test_resnet20_is_pruned_to_the_size_asked_and_counted_exactly(reduction: float) -> None:
    model = _resnet20()
    base = count_params(model)
    plan = prune(model, reduction, X32)
    assert plan.params_after == count_params(model)
    assert base / count_params(model) >= reduction
    assert base / count_params(model) < reduction * 1.02  # whole channels, topped up


def test_overlapping_chains_are_counted_exactly() -> None:
    model = nn.Sequential(Bottleneck(16, 12), Bottleneck(16, 12))
    # prune() itself refuses a count that differs from the model's
    x = torch.zeros(1, 16, 6, 6)
    plan = prune(model, 2.0, x)
    assert plan.params_after == count_params(model)
    assert plan.macs_after == sum(layer_macs(model, x).values())
    assert plan.param_reduction >= 2.0


@pytest.mark.parametrize("reduction", [1.5, 3.0])
def test_a_mac_target_is_met_and_counted_exactly(reduction: float) -> None:
    model = _resnet20()
    before = sum(layer_macs(model, X32).values())
    plan = prune(model, reduction, X32, kind="macs")
    after = sum(layer_macs(model, X32).values())
    assert (plan.macs_before, plan.macs_after) == (before, after)
    assert reduction <= before / after < reduction * 1.02
    assert plan.params_after == count_params(model)


def test_a_size_out_of_reach_names_the_most_pruning_can_do() -> None:
    with pytest.raises(HT2Error, match=r"reaches at most \d+\.\d\dx fewer parameters"):
        plan_pruning(_resnet20(), 80, X32)
    with pytest.raises(HT2Error, match="no channels that can be pruned"):
        plan_pruning(Tied(), 2, torch.zeros(1, 3, 8, 8))


def test_pruned_folder_reloads_to_the_same_function(tmp_path: Path) -> None:
    model = _resnet20()
    prune(model, 3.8, X32)
    x = torch.randn(2, 3, 32, 32)
    folder = ht2.save(model, tmp_path / "pruned")
    manifest = json.loads((folder / "ht2.json").read_text())
    assert manifest["format_version"] == 4 and len(manifest["pruned"]) == 9
    loaded = ht2.load(folder)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_pruned_then_folded_folder_reloads(tmp_path: Path) -> None:
    from ht2.export import fold_batchnorms

    model = _resnet20()
    prune(model, 2.5, X32)
    fold_batchnorms(model, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    loaded = ht2.load(ht2.save(model, tmp_path / "folded"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.update(keep=[0, 99]), "channel indices below 16"),
        (lambda e: e.update(keep=[3, 1]), "ascending"),
        (lambda e: e.update(keep=[]), "at least one"),
        (lambda e: e.update(producer="linear"), "is a Linear, not a Conv2d"),
        (lambda e: e.update(consumer="layer9.conv"), "which the model does not have"),
        (lambda e: e.update(keep="0-3"), 'malformed "pruned" list'),
        (lambda e: e.pop("norm"), 'malformed "pruned" list'),
    ],
)
def test_damaged_pruning_record_is_refused_on_load(tmp_path: Path, edit, message: str) -> None:
    model = _resnet20()
    prune(model, 2.5, X32)
    folder = ht2.save(model, tmp_path / "pruned")
    manifest = json.loads((folder / "ht2.json").read_text())
    edit(manifest["pruned"][0])
    (folder / "ht2.json").write_text(json.dumps(manifest))
    with pytest.raises(HT2Error, match=message):
        ht2.load(folder)


def test_cli_prune_writes_a_folder_that_evaluate_reads(cli, tmp_path: Path) -> None:
    out = tmp_path / "p"
    code, stdout, stderr = cli(
        [
            "prune",
            "cifar10_resnet20",
            "--random-init",
            "--target-params",
            "3.8x",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["chains"] == 9 and report["param_reduction"] >= 3.8
    assert count_params(ht2.load(out)) == report["params_after"]
    assert "ht2 finetune" in stderr


def test_cli_prune_out_of_reach_is_one_line(cli, tmp_path: Path) -> None:
    code, _, stderr = cli(
        [
            "prune",
            "cifar10_resnet20",
            "--random-init",
            "--target-params",
            "80",
            "--out",
            str(tmp_path / "p"),
        ]
    )
    assert code == 2
    assert stderr.strip().count("\n") == 0 and "at most" in stderr
    assert not (tmp_path / "p").exists()


def test_report_of_a_pruned_folder_lists_each_pair_and_the_sizes(cli, tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert (
        cli(
            ["prune", "cifar10_resnet20", "--random-init", "--target-macs", "2", "--out", str(out)]
        )[0]
        == 0
    )
    code, stdout, stderr = cli(["report", str(out), "--json"])
    assert code == 0, stderr
    summary = json.loads(stdout)
    model = ht2.load(out)
    assert summary["params_after"] == count_params(model)
    assert summary["macs_after"] == sum(layer_macs(model, X32).values())
    assert 2 <= summary["mac_reduction"] < 2.04
    assert summary["chains"][0] == {
        "producer": "layer1.0.conv1",
        "norm": "layer1.0.bn1",
        "consumer": "layer1.0.conv2",
        "kept": model.layer1[0].conv1.out_channels,
        "channels": 16,
    }
    code, stdout, _ = cli(["report", str(out)])
    assert code == 0 and "layer3.2.conv1" in stdout and "channel pruning:" in stdout


def test_report_of_an_edited_pruned_folder_is_refused_before_any_model_is_built(
    cli, tmp_path: Path
) -> None:
    """A class count no saved tensor has is refused from the file's header, not by building
    an original with 2**40 classes first."""
    out = tmp_path / "p"
    cli(["prune", "cifar10_resnet20", "--random-init", "--target-macs", "2", "--out", str(out)])
    manifest = json.loads((out / "ht2.json").read_text())
    manifest["arch"]["kwargs"]["num_classes"] = 2**40
    (out / "ht2.json").write_text(json.dumps(manifest))
    code, stdout, stderr = cli(["report", str(out)])
    assert (code, stdout) == (2, "")
    assert stderr.count("\n") == 1 and "num_classes is 1099511627776, but no tensor" in stderr
