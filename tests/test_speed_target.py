"""The speed-target planner: ranks, forms and dense layers chosen by timed latencies.

Timings are replaced by a deterministic cost model (parameters, a stand-in for MACs at one
resolution, plus a fixed cost per call), so the choices can be checked exactly; the real timer
runs in tests/test_plan.py's every-planner test."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

import ht2
from ht2.errors import HT2Error
from ht2.layers import FactorizedLayer
from ht2.metrics import count_params
from ht2.metrics import treatment as treatment_module
from ht2.metrics.latency import Timing
from ht2.planning import speed
from ht2.planning.options import CompressOptions
from ht2.planning.registry import plan_with
from ht2.surgery.latency_aware import FormTiming
from ht2.surgery.ranking import LayerRanker
from ht2.surgery.targets import Target

CALL_MS = 0.02  # what each convolution call costs besides its MACs, in the fake timer


def _net() -> nn.Module:
    """Two wide 3x3 convs worth factorizing and a narrow one that is not, then a head."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 48, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(48, 48, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(48, 48, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(48, 5),
    )


def _fake_ms(module: nn.Module, x: torch.Tensor) -> float:
    calls = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())
    return count_params(module) / 1e4 + CALL_MS * calls


@pytest.fixture
def fake_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    def time_models(prepared, x, repeats=20, warmup=3, threads=None):
        return [Timing((_fake_ms(p.module, x),)) for p in prepared]

    monkeypatch.setattr(treatment_module, "time_models", time_models)  # time_in_turn's timer
    monkeypatch.setattr(treatment_module, "prime", lambda prepared, x, names: None)


EXAMPLE = torch.zeros(1, 3, 16, 16)
TIMING = FormTiming(batch_size=2, repeats=1, warmup=0)


def _plan(speedup: float, **options) -> ht2.Plan:
    return plan_with(
        "speed", _net(), EXAMPLE, CompressOptions(**options), speedup=speedup, timing=TIMING
    )


def test_spectral_damage_is_the_share_each_unfolding_leaves_out() -> None:
    weight = torch.randn(8, 6, 3, 3)
    ranker = LayerRanker("ht2", weight)
    ranks = {"r1": 2, "r13": 3, "r3": 1}
    expected = sum(
        1 - float(ranker.spectra[key][: ranks[key]].sum() / ranker.spectra[key].sum())
        for key in ranks
    )
    assert speed.spectral_damage(ranker, ranks) == pytest.approx(expected)
    full = {key: len(s2) for key, s2 in ranker.spectra.items()}
    assert speed.spectral_damage(ranker, full) == pytest.approx(0.0, abs=1e-6)


def test_a_reachable_target_is_met_with_the_plan_the_choice_names(fake_timer) -> None:
    model = _net()
    plan = plan_with("speed", model, EXAMPLE, CompressOptions(), speedup=1.5, timing=TIMING)
    record = plan.provenance["speed_target"]
    assert record["met"] and record["note"] == ""
    assert record["reached"] >= 1.5 * 0.98
    assert plan.provenance["allocation"] == "latency" and plan.provenance["energy"] is None
    ht2.apply(model, plan, example_input=EXAMPLE)
    x = torch.zeros(2, 3, 16, 16)
    assert _fake_ms(_net(), x) / _fake_ms(model, x) == pytest.approx(record["reached"])
    for entry in plan.layers:
        layer = model.get_submodule(entry.name)
        assert isinstance(layer, FactorizedLayer)
        assert layer.form == entry.form and dict(layer.ranks) == entry.ranks


def test_a_layer_whose_factors_are_not_faster_stays_dense_with_the_reason(fake_timer) -> None:
    plan = _plan(1.2)
    # the 3->4 first conv: its SVD factors cost a second call for no fewer MACs worth it
    assert plan.dense["0"] == speed.KEPT_DENSE
    assert {entry.name for entry in plan.layers} <= {"2", "4", "6", "10"}


def test_less_damage_for_a_looser_target(fake_timer) -> None:
    loose, tight = _plan(1.2), _plan(2.0)

    def damage(plan):
        chosen = plan.provenance["speed_target"]
        return chosen["rounds"][chosen["kept_round"]]["damage"]

    assert damage(loose) < damage(tight)
    assert loose.provenance["speed_target"]["met"] and tight.provenance["speed_target"]["met"]


def test_an_unreachable_target_keeps_the_fastest_plan_and_says_so(fake_timer) -> None:
    plan = _plan(1000.0)
    record = plan.provenance["speed_target"]
    assert not record["met"]
    assert record["note"] == (
        f"1000x is out of reach here: the nearest reached is {record['reached']:.2f}x"
    )
    assert len(record["rounds"]) == 1  # nothing faster to try


def test_round_ranks_apply_to_every_timed_rank(fake_timer) -> None:
    from ht2.surgery.ranking import rank_limits

    net = _net()
    plan = _plan(1.5, round_ranks=4)
    assert plan.layers
    for entry in plan.layers:
        limits = rank_limits(entry.method, net.get_submodule(entry.name).weight.shape)
        for key, rank in entry.ranks.items():
            assert rank % 4 == 0 or rank == limits[key], (entry.name, key, rank)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"speedup": 1.0}, "a speed target must be above 1 (such as 2 or 2x), got 1"),
        ({"speedup": 2.0, "example_input": None}, "a speed target times the model"),
    ],
)
def test_bad_speed_targets_are_refused(kwargs: dict, message: str) -> None:
    arguments = {"example_input": EXAMPLE, "timing": TIMING, **kwargs}
    example = arguments.pop("example_input")
    with pytest.raises(HT2Error, match="^" + re.escape(message)):
        plan_with("speed", _net(), example, CompressOptions(), **arguments)


def test_the_recipe_pipeline_runs_the_speed_planner(fake_timer) -> None:
    from ht2.recipes.pipeline import compress_with_recipe

    model = _net()
    report = compress_with_recipe(model, "paper", example_input=EXAMPLE, speedup=1.5, forms=TIMING)
    steps = [step["step"] for step in report.pipeline["steps"]]
    assert steps == ["speed target", "factors"]  # the forms come from the speed planner
    assert report.pipeline["steps"][0]["met"] == report.provenance["speed_target"]["met"]
    with pytest.raises(HT2Error, match="^a speed target chooses every layer's ranks; do not "):
        compress_with_recipe(
            model, "paper", example_input=EXAMPLE, speedup=1.5, target=Target("params", 2)
        )


def test_the_recipe_asks_the_final_plan_for_its_sweeps(fake_timer) -> None:
    from ht2.recipes.pipeline import plan_with_recipe
    from ht2.recipes.recipe import get_recipe

    recipe = get_recipe("paper").with_choices(refine_sweeps=3)
    plan = plan_with_recipe(_net(), recipe, example_input=EXAMPLE, speedup=1.5, forms=TIMING)
    assert plan.provenance["refine_sweeps"] == 3
    assert {entry.refine_sweeps for entry in plan.layers} == {3}


def test_the_command_line_plans_for_speed(tmp_path, cli, fake_timer) -> None:
    code, out, err = cli(
        [
            "compress",
            "cifar10_resnet20",
            "--random-init",
            "--target-speedup",
            "1.2",
            "--batch-size",
            "2",
            "--threads",
            "1",
            "--json",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0, err
    report = json.loads(out)
    record = report["provenance"]["speed_target"]
    assert record["factor"] == 1.2 and record["batch_size"] == 2
    assert record["fold_bn"] is True  # the whole models are timed as deployed
    assert isinstance(record["reached"], float) and record["met"] == (record["reached"] >= 1.176)
    assert report["pipeline"]["steps"][0]["step"] == "speed target"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--target-params", "2"],
            "--target-speedup chooses every layer's ranks; drop --target-params",
        ),
        (
            ["--rank-rule", "vbmf"],
            "--target-speedup chooses every layer's ranks; drop --rank-rule vbmf",
        ),
        (
            ["--allow-dense"],
            "--allow-dense lets --latency-aware give size back: add "
            "--latency-aware (--target-speedup keeps a layer dense wherever that is faster "
            "anyway)",
        ),
    ],
)
def test_cli_refuses_what_clashes_with_a_speed_target(tmp_path, cli, extra, message) -> None:
    args = ["compress", "cifar10_resnet20", "--random-init", "--target-speedup", "2"]
    code, out, err = cli([*args, *extra, "--out", str(tmp_path / "o")])
    assert code != 0
    assert err.strip().splitlines() == [f"ht2: error: {message}"]
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_speedup_of_one(tmp_path, cli) -> None:
    args = ["compress", "cifar10_resnet20", "--random-init", "--target-speedup", "1"]
    code, out, err = cli([*args, "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--target-speedup: a reduction factor must be above 1, got '1'" in err


def test_whole_models_are_timed_in_an_exported_runtime_and_layers_in_eager(fake_timer) -> None:
    """OpenVINO (or ONNX Runtime) runs the whole-model checks; the fake timer sees what ran."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    from ht2.metrics.treatment import Treatment

    timing = FormTiming(batch_size=2, repeats=1, warmup=0, treatment=Treatment(runtime="openvino"))
    seen = []
    real = treatment_module.time_models

    def recording(prepared, x, *args, **kwargs):
        seen.extend(p.treatment.runtime for p in prepared)
        return (
            real(prepared, x, *args, **kwargs)
            if prepared[0].module is not None
            else [Timing((1.0,)) for _ in prepared]
        )

    treatment_module.time_models = recording
    try:
        plan = plan_with("speed", _net(), EXAMPLE, CompressOptions(), speedup=1.2, timing=timing)
    finally:
        treatment_module.time_models = real
    record = plan.provenance["speed_target"]
    assert record["runtime"] == "openvino" and record["layers_runtime"] == "eager"
    assert record["fold_bn"] is True
    assert {"eager", "openvino"} <= set(seen)


def test_a_treatment_the_runtime_cannot_run_is_refused() -> None:
    from ht2.metrics.treatment import Treatment

    timing = FormTiming(treatment=Treatment("bfloat16", runtime="onnxruntime"))
    with pytest.raises(HT2Error, match="ONNX Runtime runs the exported float32 graph"):
        plan_with("speed", _net(), EXAMPLE, CompressOptions(), speedup=1.5, timing=timing)


@pytest.mark.slow  # the data-aware fit of a whole ResNet-20: half a minute
def test_the_best_recipe_fits_the_speed_plan_to_training_images(tiny, fake_timer) -> None:
    from ht2.recipes.pipeline import compress_with_recipe
    from ht2.recipes.recipe import get_recipe

    model = ht2.models.create("cifar10_resnet20", num_classes=3)
    recipe = get_recipe("best").with_images(16).with_choices(refine_sweeps=1)
    report = compress_with_recipe(
        model,
        recipe,
        data=str(tiny),
        example_input=torch.zeros(1, 3, 32, 32),
        speedup=1.5,
        forms=TIMING,
        workers=0,
    )
    steps = [step["step"] for step in report.pipeline["steps"]]
    assert steps[0] == "speed target" and "allocate" not in steps  # the planner decided
    assert report.data_aware is not None  # then the recipe's fit ran on the planned layers
    assert report.refine_sweeps == recipe.refine_sweeps
    assert all(line.form is not None for line in report.layers if line.method == "ht2")


def test_the_summary_says_what_low_energies_will_cost() -> None:
    from ht2.cli.tables import rank_notes

    report = ht2.compress(_net(), energy=0.3, example_input=EXAMPLE)
    report.provenance["speed_target"] = {
        "factor": 2.0,
        "reached": 1.5,
        "met": False,
        "note": "2x is out of reach here: the nearest reached is 1.50x",
        "device": "cpu",
        "batch_size": 1,
        "dtype": "float32",
        "memory_format": "contiguous",
        "runtime": "eager",
    }
    factorized = [line for line in report.layers if line.energy is not None]
    assert factorized
    notes = rank_notes(report)
    assert notes[0].startswith("speed target 2x (cpu, batch 1, float32, NCHW, eager")
    assert notes[1] == (
        f"{len(factorized)} of {len(factorized)} factorized layers keep less than half of their "
        "spectral energy (lowest e=0.3): expect a large accuracy drop until the model is "
        "fine-tuned; measure it with `ht2 evaluate`"
    )


def test_min_energy_keeps_every_factorized_layer_at_or_above_it(fake_timer) -> None:
    from ht2.recipes.pipeline import plan_with_recipe

    plan = plan_with_recipe(
        _net(), "paper", example_input=EXAMPLE, speedup=1.5, forms=TIMING, min_energy=0.7
    )
    assert plan.provenance["speed_target"]["energies"] == [0.7, 0.8, 0.9, 0.95]
    assert plan.layers and all(entry.energy >= 0.7 for entry in plan.layers)
    with pytest.raises(HT2Error, match=r"^min_energy must be in \(0, 1\], got 1.5"):
        plan_with_recipe(
            _net(), "paper", example_input=EXAMPLE, speedup=1.5, forms=TIMING, min_energy=1.5
        )


def test_cli_min_energy_needs_a_speed_target(tmp_path, cli) -> None:
    args = ["compress", "cifar10_resnet20", "--random-init", "--min-energy", "0.5"]
    code, _, err = cli([*args, "--out", str(tmp_path / "o")])
    assert code == 2
    assert err.strip().splitlines() == [
        "ht2: error: --min-energy bounds what --target-speedup times: add --target-speedup"
    ]
