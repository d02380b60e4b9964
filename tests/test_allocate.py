"""Rank allocation across layers: who gets the rank, budgets met, replay, plots, bad input."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import ht2
from ht2.cli.tables import report_table
from ht2.errors import HT2Error
from ht2.planning.allocated import compress_allocated
from ht2.surgery.allocate import allocate
from ht2.surgery.knapsack import Option, choose
from ht2.surgery.sensitivity import SensitivityOptions
from ht2.surgery.targets import Target
from tests._shared import write_image_tree

WIDTH = 24
X = torch.zeros(1, 3, 8, 8)
FAST = SensitivityOptions(candidates=(0.3, 0.6, 0.8, 0.95))


def low_rank_kernel(t: int, c: int, rank: int, generator: torch.Generator) -> torch.Tensor:
    """A t x c x 3 x 3 kernel of Tucker-2 ranks (rank, rank): every unfolding is low rank."""
    core = torch.randn(rank, rank, 3, 3, generator=generator)
    out_basis = torch.randn(t, rank, generator=generator)
    in_basis = torch.randn(c, rank, generator=generator)
    return torch.einsum("abhw,ta,cb->tchw", core, out_basis, in_basis) / (rank * 3)


class Toy(nn.Module):
    """A stem, a redundant 3x3 conv (rank 3 in every unfolding), a full-rank one, a head."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.stem = nn.Conv2d(3, WIDTH, 3, padding=1)
        self.redundant = nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTH)
        self.full = nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(WIDTH)
        self.head = nn.Linear(WIDTH, 10)
        with torch.no_grad():
            kernel = low_rank_kernel(WIDTH, WIDTH, 3, generator)
            noise = torch.randn(kernel.shape, generator=generator)
            self.redundant.weight.copy_(kernel + 1e-4 * noise * kernel.std())
            full = torch.randn(WIDTH, WIDTH, 3, 3, generator=generator)
            self.full.weight.copy_(full * kernel.norm() / full.norm())
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.bn1(self.redundant(x)))
        x = torch.relu(self.bn2(self.full(x)))
        return self.head(x.mean((2, 3)))


def batches(count: int = 96, size: int = 32):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(count, 3, 8, 8, generator=generator)
    return [(chunk, torch.zeros(len(chunk))) for chunk in images.split(size)]


def _layer(report, name):
    return next(layer for layer in report.layers if layer.name == name)


@pytest.mark.parametrize("allocation", ["spectrum", "sensitivity"])
def test_the_redundant_layer_keeps_the_lower_rank(allocation: str) -> None:
    model = Toy()
    report = compress_allocated(
        model, "tucker2", Target("params", 2.5), allocation, X, batches(), 64, options=FAST
    )
    redundant, full = _layer(report, "redundant"), _layer(report, "full")
    assert redundant.method == "tucker2"
    assert max(redundant.ranks.values()) <= 4
    assert full.params_after > 2 * redundant.params_after
    if full.ranks:
        assert min(full.ranks.values()) > max(redundant.ranks.values())


METHODS = ("ht2", "tucker2", "cp", "spatial-svd")
PAIRS = [(a, m) for a in ("uniform", "spectrum", "sensitivity") for m in METHODS]


@pytest.mark.parametrize(
    ("allocation", "method"),
    [p if p[1] != "cp" else pytest.param(*p, marks=pytest.mark.slow) for p in PAIRS],  # CP: ALS
)
def test_every_method_meets_a_parameter_budget_within_2_percent(allocation, method) -> None:
    model = Toy()
    report = compress_allocated(
        model, method, Target("params", 3.0), allocation, X, batches(), 64, options=FAST
    )
    assert abs(report.param_reduction / 3.0 - 1) <= 0.02
    assert report.target["met"] and report.target["allocation"] == allocation
    assert report.target["reached"] == pytest.approx(report.param_reduction)


@pytest.mark.parametrize("allocation", ["spectrum", "sensitivity"])
def test_a_mac_budget_is_met_within_2_percent(allocation: str) -> None:
    report = compress_allocated(
        Toy(), "ht2", Target("macs", 2.0), allocation, X, batches(), 64, options=FAST
    )
    assert abs(report.mac_reduction / 2.0 - 1) <= 0.02


def test_sensitivity_energies_go_into_the_report_and_ht2_load_replays_them(tmp_path) -> None:
    model = Toy()
    original = copy.deepcopy(model)
    report = compress_allocated(
        model, "ht2", Target("params", 3.0), "sensitivity", X, batches(), 64, options=FAST
    )
    energies = {layer.name: layer.energy for layer in report.replaced}
    assert len(set(energies.values())) > 1 and report.energy is None
    assert "energy" in report_table(report).splitlines()[0]
    assert "sensitivity allocation for 3x fewer params" in report_table(report)
    assert len(report.target["damage"]["full"]) == len(FAST.candidates) + 1
    ht2.save(model, tmp_path / "toy", report)
    loaded = ht2.load(tmp_path / "toy", model=original)
    for layer in report.replaced:
        rebuilt = loaded.get_submodule(layer.name)
        assert rebuilt.energy == pytest.approx(layer.energy)
        assert dict(rebuilt.ranks) == layer.ranks
    images = batches()[0][0]
    torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=1e-6)


def test_spectrum_gives_ranks_and_no_single_energy() -> None:
    model = Toy()
    chosen = allocate(model, "ht2", Target("params", 3.0), "spectrum", X)
    assert set(chosen.layer_ranks) == {"stem", "redundant", "full", "head"}
    assert 0 < chosen.details["threshold"] < 1
    assert chosen.predicted == pytest.approx(3.0, rel=0.02)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # model left unchanged
    assert isinstance(model.full, nn.Conv2d)


def test_the_knapsack_spends_the_budget_where_damage_falls_fastest() -> None:
    steep = [Option(0.5, 10, 9.0), Option(0.8, 20, 1.0), Option(1.0, 40, 0.0)]
    flat = [Option(0.5, 10, 0.2), Option(0.8, 20, 0.1), Option(1.0, 40, 0.0)]
    assert choose([steep, flat], 30) == [1, 0]
    assert choose([steep, flat], 60) == [2, 1]
    with pytest.raises(ValueError):
        choose([steep, flat], 19)


def test_a_budget_out_of_reach_says_so() -> None:
    for allocation in ("spectrum", "sensitivity"):
        with pytest.raises(HT2Error, match="out of reach"):
            compress_allocated(
                Toy(), "ht2", Target("params", 500), allocation, X, batches(), 64, options=FAST
            )


def test_one_compressible_layer_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten())
    with pytest.raises(HT2Error, match="one layer"):
        allocate(model, "ht2", Target("params", 2), "spectrum", X)


def test_sensitivity_needs_data_and_a_target() -> None:
    with pytest.raises(HT2Error, match="give --data"):
        allocate(Toy(), "ht2", Target("params", 2), "sensitivity", X, loader=None)
    with pytest.raises(HT2Error, match="--target-params or --target-macs"):
        allocate(Toy(), "ht2", None, "spectrum", X)


def test_cli_spectrum_writes_the_plot_and_the_report_shows_the_allocation(tmp_path, cli):
    out = tmp_path / "r20"
    base = ["compress", "cifar10_resnet20", "--random-init", "--out", str(out)]
    code, stdout, _ = cli([*base, "--target-params", "3", "--allocate", "spectrum", "--plots"])
    assert code == 0
    assert (out / "allocation.png").stat().st_size > 10_000
    report = json.loads((out / "report.json").read_text())
    assert report["target"]["allocation"] == "spectrum" and report["target"]["met"]
    assert abs(report["param_reduction"] / 3 - 1) <= 0.02
    assert "spectrum allocation for 3x fewer params" in stdout
    assert cli(["report", str(out)])[1].splitlines()[-4:] == stdout.splitlines()[-4:]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--allocate", "spectrum"], "give --target-params or --target-macs"),
        (["--allocate", "sensitivity", "--target-params", "4"], "give --data PATH"),
        (["--allocate", "spectrum", "--target-params", "900"], "out of reach"),
        (
            ["--allocate", "spectrum", "--target-params", "2", "--include", "layer1.0.conv1"],
            "one layer",
        ),
        (["--allocate", "spectrum", "--target-params", "2", "--rank-rule", "vbmf"], "--rank-rule"),
    ],
)
def test_cli_bad_allocations_fail_in_one_line_and_write_nothing(tmp_path, cli, extra, message):
    out = tmp_path / "o"
    code, _, err = cli(["compress", "cifar10_resnet20", "--random-init", "--out", str(out), *extra])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _compare_args(tmp_path) -> list[str]:
    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=2)
    args = ["compare", "cifar10_resnet20", "--random-init", "--data", str(data)]
    args += ["--eval-images", "10", "--calib-images", "10", "--workers", "0", "--no-latency"]
    return [*args, "--target-params", "3", "--methods", "ht2", "--out", str(tmp_path / "cmp")]


def _compare_rows(tmp_path, cli, allocations: str) -> list[dict]:
    code, _, err = cli([*_compare_args(tmp_path), "--allocations", allocations])
    assert code == 0, err
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert [row["allocation"] for row in rows] == allocations.split(",")
    assert all(row["met"] and abs(row["param_reduction"] / 3 - 1) <= 0.02 for row in rows)
    return rows


def test_compare_runs_each_allocation_at_the_budget(tmp_path, cli) -> None:
    rows = _compare_rows(tmp_path, cli, "uniform,spectrum")
    assert rows[0]["energy"] is not None and rows[1]["energy"] is None
    code, _, err = cli([*_compare_args(tmp_path), "--allocations", "uniform,greedy"])
    assert code == 2 and "allocations are uniform, spectrum, sensitivity" in err


@pytest.mark.slow
def test_compare_measures_sensitivity_on_its_training_images(tmp_path, cli) -> None:
    _compare_rows(tmp_path, cli, "sensitivity")


@pytest.mark.parametrize("allocation", ["spectrum", "sensitivity"])
def test_rounded_ranks_are_counted_in_the_budget(allocation: str) -> None:
    report = compress_allocated(
        Toy(),
        "ht2",
        Target("params", 2.5),
        allocation,
        X,
        batches(),
        64,
        options=FAST,
        round_ranks=4,
    )
    assert abs(report.param_reduction / 2.5 - 1) <= 0.02
    assert all(rank % 4 == 0 for layer in report.replaced for rank in layer.ranks.values())
