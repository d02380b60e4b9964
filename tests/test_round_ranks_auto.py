"""round_ranks="auto": the planned layers timed at each rank multiple, the fastest kept.

A fake timer stands in for the kernels (aligned channel counts run faster), so the choice can
be checked exactly; one test times for real through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import ht2
from ht2.errors import HT2Error
from ht2.metrics import layer_macs
from ht2.metrics import treatment as treatment_module
from ht2.metrics.latency import Timing
from ht2.planning import rounding
from ht2.recipes.pipeline import plan_with_recipe
from ht2.surgery.latency_aware import FormTiming
from ht2.surgery.ranking import rank_limits

EXAMPLE = torch.zeros(1, 3, 32, 32)
TIMING = FormTiming(batch_size=2, repeats=1, warmup=0)


def _aligned(module: nn.Module, multiple: int) -> bool:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return all(c.in_channels % multiple == 0 or c.in_channels <= 3 for c in convs) and all(
        c.out_channels % multiple == 0 for c in convs
    )


def _fake(cost_of):
    def time_models(prepared, x, repeats=20, warmup=3, threads=None):
        return [Timing((cost_of(p.module, x),)) for p in prepared]

    return time_models


def _macs(module: nn.Module, x: torch.Tensor) -> float:
    return sum(layer_macs(module, x).values()) / 1e6


def _plan(monkeypatch, cost_of, **options) -> ht2.Plan:
    monkeypatch.setattr(treatment_module, "time_models", _fake(cost_of))  # time_in_turn's timer
    model = ht2.models.create("cifar10_resnet20")
    return plan_with_recipe(
        model,
        "paper",
        energy=0.6,
        example_input=EXAMPLE,
        round_ranks=rounding.AutoRounding(TIMING),
        **options,
    ), model


def test_the_multiple_the_kernels_prefer_is_kept_and_planned(monkeypatch) -> None:
    # kernels three times slower unless every channel count is a multiple of 8
    plan, model = _plan(monkeypatch, lambda m, x: _macs(m, x) * (1 if _aligned(m, 8) else 3))
    auto = plan.provenance["round_ranks_auto"]
    assert auto["chosen"] == 8 and plan.provenance["round_ranks"] == 8
    assert set(auto["layers_ms"]) == {"1", "4", "8", "16", "32"}
    assert min(auto["layers_ms"], key=auto["layers_ms"].get) == "8"
    assert auto["batch_size"] == 2 and auto["dtype"] == "float32"
    for entry in plan.layers:
        limits = rank_limits(entry.method, model.get_submodule(entry.name).weight.shape)
        for key, rank in entry.ranks.items():
            assert rank % 8 == 0 or rank == limits[key], (entry.name, key, rank)


def test_a_near_tie_keeps_the_smaller_multiple(monkeypatch) -> None:
    plan, _ = _plan(monkeypatch, lambda m, x: 1.0)
    assert plan.provenance["round_ranks_auto"]["chosen"] == 1
    assert plan.provenance["round_ranks"] == 1
    assert all(entry.unrounded is None for entry in plan.layers)


def test_more_macs_never_win_without_a_faster_kernel(monkeypatch) -> None:
    plan, _ = _plan(monkeypatch, _macs)
    assert plan.provenance["round_ranks_auto"]["chosen"] == 1
    ms = plan.provenance["round_ranks_auto"]["layers_ms"]
    assert [ms[k] for k in ("1", "4", "8", "16", "32")] == sorted(ms.values())


def test_the_size_target_is_met_at_the_chosen_multiple(monkeypatch) -> None:
    plan, model = _plan(
        monkeypatch,
        lambda m, x: _macs(m, x) * (1 if _aligned(m, 4) else 2),
        target=ht2.surgery.targets.Target("params", 3),
    )
    assert plan.provenance["round_ranks"] == plan.provenance["round_ranks_auto"]["chosen"] == 4
    report = ht2.apply(model, plan, example_input=EXAMPLE)
    assert math.isclose(report.param_reduction, 3, rel_tol=0.05)


def test_auto_is_refused_with_a_speed_target_and_without_an_example_input() -> None:
    model = ht2.models.create("cifar10_resnet20")
    with pytest.raises(HT2Error, match="^a speed target times its own ranks"):
        plan_with_recipe(model, "paper", example_input=EXAMPLE, round_ranks="auto", speedup=2.0)
    with pytest.raises(HT2Error, match="^round_ranks auto times the planned layers"):
        plan_with_recipe(model, "paper", round_ranks="auto")


def test_cli_round_ranks_auto_times_for_real(tmp_path, cli) -> None:
    out = tmp_path / "out"
    code, printed, err = cli(
        [
            "compress",
            "cifar10_resnet20",
            "--random-init",
            "--energy",
            "0.6",
            "--round-ranks",
            "auto",
            "--batch-size",
            "2",
            "--threads",
            "1",
            "--json",
            "--out",
            str(out),
        ]
    )
    assert code == 0, err
    report = json.loads(printed)
    auto = report["provenance"]["round_ranks_auto"]
    assert auto["chosen"] in (1, 4, 8, 16, 32) and auto["batch_size"] == 2
    assert report["round_ranks"] == auto["chosen"]
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert saved["provenance"]["round_ranks_auto"] == auto


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--round-ranks", "often"], "expected a positive whole number or auto, got 'often'"),
        (
            ["--round-ranks", "auto", "--target-speedup", "2"],
            "--target-speedup times its own ranks: give --round-ranks a number, not auto",
        ),
        (
            ["--dtype", "bfloat16"],
            "--dtype says where --latency-aware, --target-speedup or --round-ranks auto time "
            "layers: add one of them",
        ),
    ],
)
def test_cli_refuses_bad_rounding_in_one_line(tmp_path, cli, extra, message) -> None:
    args = ["compress", "cifar10_resnet20", "--random-init", *extra, "--out", str(tmp_path / "o")]
    code, _, err = cli(args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
