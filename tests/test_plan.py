"""ht2.plan / ht2.apply / Plan: deciding apart from doing, exactly, and plans as files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import ht2
from ht2 import HT2Error
from ht2.io.plan_file import read_plan, write_plan
from ht2.surgery.targets import Target

EXAMPLE = torch.zeros(1, 3, 32, 32)


def _resnet20() -> nn.Module:
    return ht2.models.create("cifar10_resnet20").eval()


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("method", ["ht2", "tucker2", "spatial-svd"])
def test_apply_of_plan_equals_compress(method: str) -> None:
    model = _resnet20()
    direct, planned = copy.deepcopy(model), copy.deepcopy(model)
    expected = ht2.compress(direct, energy=0.6, method=method, example_input=EXAMPLE)
    plan = ht2.plan(planned, EXAMPLE, energy=0.6, method=method)
    assert _same_state(planned, model)  # planning changes nothing
    report = ht2.apply(planned, plan, example_input=EXAMPLE)
    assert _same_state(planned, direct)
    assert [(r.name, r.method, r.ranks) for r in report.layers] == [
        (r.name, r.method, r.ranks) for r in expected.layers
    ]
    assert report.params_after == expected.params_after
    assert report.macs_after == expected.macs_after


def test_plan_from_json_applies_to_the_same_factors() -> None:
    model = _resnet20()
    plan = ht2.plan(model, EXAMPLE, target=Target("params", 3.0), refine_sweeps=2)
    text = plan.to_json()
    again = ht2.Plan.from_json(text)
    assert again == plan and again.to_json() == text
    cached, replayed = copy.deepcopy(model), copy.deepcopy(model)
    ht2.apply(cached, plan)
    assert not again._built  # nothing computed travels in the file
    ht2.apply(replayed, again)
    for (name, a), (_, b) in zip(
        cached.state_dict().items(), replayed.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_an_edited_plan_is_applied_as_edited() -> None:
    model = _resnet20()
    plan = ht2.plan(model, EXAMPLE, energy=0.8)
    layer = plan.layer("layer2.0.conv1")
    layer.ranks = {"r1": 3, "r13": 4, "r3": 5}
    ht2.apply(model, plan)
    assert dict(model.get_submodule("layer2.0.conv1").ranks) == {"r1": 3, "r13": 4, "r3": 5}


def test_changed_weights_are_decomposed_again() -> None:
    model = _resnet20()
    plan = ht2.plan(model, EXAMPLE, energy=0.8)
    with torch.no_grad():
        model.get_submodule("layer1.0.conv1").weight.mul_(2.0)
    reference = copy.deepcopy(model)
    ht2.apply(model, plan)
    ranks = plan.layer("layer1.0.conv1").ranks
    expected = ht2.layers.factorize(reference.get_submodule("layer1.0.conv1"), "ht2", ranks=ranks)
    torch.testing.assert_close(
        model.get_submodule("layer1.0.conv1").dense_weight(), expected.dense_weight()
    )


def test_saved_folder_stores_the_plan_and_replays(tmp_path: Path) -> None:
    model = _resnet20()
    fresh = copy.deepcopy(model)
    report = ht2.compress(model, energy=0.7, example_input=EXAMPLE)
    ht2.save(model, tmp_path / "r20", report)
    manifest = json.loads((tmp_path / "r20" / "ht2.json").read_text())
    assert manifest["provenance"]["rank_rule"] == "energy"
    assert manifest["provenance"]["energy"] == 0.7
    plan = read_plan(tmp_path / "r20")
    assert plan.ranks() == {r.name: r.ranks for r in report.replaced}
    ht2.apply(fresh, plan)
    assert _same_state(fresh, model)


def test_write_plan_refuses_to_clobber(tmp_path: Path) -> None:
    plan = ht2.plan(_resnet20(), EXAMPLE, energy=0.5)
    path = tmp_path / "plan.json"
    write_plan(plan, path)
    with pytest.raises(HT2Error, match="exists; use overwrite=True"):
        write_plan(plan, path)
    write_plan(plan, path, overwrite=True)
    assert read_plan(path) == plan
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_a_data_aware_plan_needs_a_fit() -> None:
    model = _resnet20()
    plan = ht2.plan(model, EXAMPLE, energy=0.5)
    plan.layers[3].fit = "data-aware"
    with pytest.raises(HT2Error, match="data-aware fit"):
        ht2.apply(model, plan)


def test_unknown_option_names_itself() -> None:
    with pytest.raises(HT2Error, match="unknown compression option.*energie"):
        ht2.plan(_resnet20(), energie=0.5)


def _plan_dict() -> dict:
    return ht2.plan(_resnet20(), EXAMPLE, energy=0.5).to_dict()


def _edit(data: dict, change) -> dict:
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format_version=99), "newer than this ht2 reads"),
        (lambda d: d.update(format="other"), "not an ht2 plan"),
        (lambda d: d["layers"][1].update(method="magic"), "plan entry 1 .*method 'magic'"),
        (lambda d: d["layers"][1]["ranks"].update(r1=100000), "plan entry 1 .*r1"),
        (lambda d: d["layers"][2].update(fit="psychic"), "plan entry 2 .*fit 'psychic'"),
        (lambda d: d["layers"][2].update(refine_sweeps=-1), "plan entry 2 .*refine_sweeps"),
        (lambda d: d["layers"][0].update(name="../etc"), "plan entry 0"),
        (lambda d: d.update(layers="all"), '"layers" must be a list'),
        (
            lambda d: d["layers"][3].update(fitt="data-aware"),
            "plan entry 3 .*unknown field.*'fitt'",
        ),
    ],
)
def test_bad_plan_files_are_one_line(tmp_path: Path, change, message: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(_edit(_plan_dict(), change)))
    with pytest.raises(HT2Error, match=message) as caught:
        read_plan(path)
    assert "\n" not in str(caught.value)


def test_plan_naming_a_missing_layer_changes_nothing() -> None:
    def net(depth: int) -> nn.Module:
        return nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1) for _ in range(depth)])

    plan = ht2.plan(net(3), energy=0.5)
    model = net(2)
    before = copy.deepcopy(model)
    with pytest.raises(HT2Error, match="plan entry .* names layer '2'"):
        ht2.apply(model, plan)
    assert _same_state(model, before)


def test_plan_with_other_shapes_names_the_entry() -> None:
    plan = ht2.plan(ht2.models.create("cifar10_resnet20", num_classes=100), energy=0.5)
    with pytest.raises(HT2Error, match="does not fit the model at 'linear'"):
        ht2.apply(_resnet20(), plan)


R20 = ["compress", "cifar10_resnet20", "--random-init"]


def test_cli_plan_only_then_plan(tmp_path: Path, cli) -> None:
    plan_path, out = tmp_path / "plan.json", tmp_path / "r20"
    plan_only = [*R20, "--energy", "0.6", "--plan-only", "--out", str(plan_path)]
    code, _, err = cli(plan_only)
    assert code == 0, err
    data = json.loads(plan_path.read_text())
    edited = {"r1": 2, "r13": 3, "r3": 4}
    data["layers"][1]["ranks"] = edited
    plan_path.write_text(json.dumps(data))
    code, _, err = cli([*R20, "--plan", str(plan_path), "--out", str(out)])
    assert code == 0, err
    assert dict(ht2.load(out).get_submodule(data["layers"][1]["name"]).ranks) == edited
    code, _, err = cli(plan_only)
    assert code == 2 and "exists; use --force" in err


def test_cli_plan_refuses_deciding_flags(tmp_path: Path, cli) -> None:
    plan_path = tmp_path / "plan.json"
    write_plan(ht2.plan(_resnet20(), EXAMPLE, energy=0.5), plan_path)
    argv = [*R20, "--plan", str(plan_path), "--target-params", "3", "--out", str(tmp_path / "x")]
    code, _, err = cli(argv)
    assert code == 2 and "--plan gives every layer's method, ranks and sweeps" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def test_cli_bad_plan_file_is_one_line(tmp_path: Path, cli) -> None:
    plan_path = tmp_path / "plan.json"
    plan_path.write_text('{"format": "ht2-plan", "format_version": 7}')
    code, _, err = cli([*R20, "--plan", str(plan_path), "--out", str(tmp_path / "x")])
    assert code == 2 and "newer than this ht2 reads" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_data_aware_fit_is_a_step_of_apply() -> None:
    from ht2.dataaware import DataAwareFit, DataAwareOptions, compress_data_aware

    model = _resnet20()
    images = torch.randn(64, 3, 8, 8)  # small images: the same steps, a fraction of the time
    direct, planned = copy.deepcopy(model), copy.deepcopy(model)
    quick = DataAwareOptions(iterations=3)  # the same steps as the default, fewer L-BFGS rounds
    expected = compress_data_aware(direct, [images], energy=0.6, calib_images=64, options=quick)
    plan = ht2.plan(planned, energy=0.6)
    report = ht2.apply(planned, plan, fit=DataAwareFit([images], 64, quick, energy=0.6))
    assert report.data_aware is not None
    assert [r.ranks for r in report.layers] == [r.ranks for r in expected.layers]
    assert _same_state(planned, direct)


def test_every_registered_planner_gives_a_plan_that_applies(tmp_path: Path) -> None:
    from ht2.planning import PLANNERS, CompressOptions, plan_with
    from ht2.surgery.latency_aware import FormTiming
    from ht2.surgery.sensitivity import SensitivityOptions

    ranks = tmp_path / "ranks.json"
    ranks.write_text(json.dumps({"layer1.0.conv1": {"r1": 4, "r13": 5, "r3": 6}}))
    options = CompressOptions(energy=0.6, target=None)
    inputs = {
        "forms": {"timing": FormTiming(threads=1, repeats=1, warmup=0)},
        "speed": {"speedup": 1.1, "timing": FormTiming(threads=1, repeats=1, warmup=0)},
        "ranks": {"path": str(ranks)},
        "sensitivity": {
            "loader": [torch.randn(8, 3, 8, 8)],  # small images: the allocation is what is tested
            "images": 8,
            "sensitivity": SensitivityOptions(candidates=(0.5, 0.8)),
        },
    }
    sized = {"target", "spectrum", "sensitivity"}
    for name in sorted(PLANNERS):
        model = _resnet20()
        chosen = (
            CompressOptions.of(options, target=Target("params", 3.0)) if name in sized else options
        )
        plan = plan_with(name, model, EXAMPLE, chosen, **inputs.get(name, {}))
        report = ht2.apply(model, plan)
        # a speed target keeps every layer dense where no factors are faster on this machine
        assert report.replaced or "speed_target" in plan.provenance, name
        if name in sized:
            assert report.param_reduction == pytest.approx(3.0, rel=0.1), name
    assert plan_with("ranks", _resnet20(), EXAMPLE, options, path=str(ranks)).layer(
        "layer1.0.conv1"
    ).ranks == {"r1": 4, "r13": 5, "r3": 6}
    with pytest.raises(HT2Error, match="unknown planner 'psychic'"):
        plan_with("psychic", _resnet20())


def test_plan_for_another_model_is_refused() -> None:
    plan = ht2.plan(_resnet20(), EXAMPLE, energy=0.5)
    other = ht2.models.create("cifar10_resnet32")
    with pytest.raises(HT2Error, match="made for cifar10_resnet20, not cifar10_resnet32"):
        ht2.apply(other, plan)


@pytest.mark.parametrize(
    ("field", "value"), [("round_ranks", "x"), ("refine_sweeps", -2), ("energy", 7), ("include", 3)]
)
def test_bad_provenance_is_one_line(tmp_path: Path, field: str, value: object) -> None:
    data = _plan_dict()
    data["provenance"][field] = value
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HT2Error, match=f"provenance.{field}"):
        read_plan(path)


def test_compress_with_recipe_times_the_decomposition() -> None:
    from ht2.recipes.pipeline import compress_with_recipe

    report = compress_with_recipe(_resnet20(), "paper", energy=0.6, example_input=EXAMPLE)
    assert report.seconds > 0
    assert report.pipeline["steps"][-1]["seconds"] == report.seconds
    with pytest.raises(HT2Error, match="refine_sweeps comes from the recipe"):
        compress_with_recipe(_resnet20(), "paper", energy=0.6, refine_sweeps=3)


@pytest.mark.parametrize("method", ["ht2", "tucker2"])
def test_known_ranks_too_large_keep_a_layer_dense_without_factoring(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ht2.layers import factorize
    from ht2.metrics import count_params
    from ht2.planning import planner

    model = _resnet20()
    big = {"r1": 16, "r13": 48, "r3": 16} if method == "ht2" else {"r_in": 16, "r_out": 16}
    name = "layer1.0.conv1"
    module = model.get_submodule(name)
    size = count_params(factorize(module, method, ranks=big))
    factored: list[int] = []

    def counting(layer: nn.Module, *args, **kwargs):
        factored.append(id(layer))
        return factorize(layer, *args, **kwargs)

    monkeypatch.setattr(planner, "factorize", counting)
    plan = ht2.plan(model, EXAMPLE, energy=0.6, method=method, layer_ranks={name: big})
    assert plan.dense[name] == (
        f"factors would have {size:,} parameters, not fewer than {count_params(module):,}"
    )
    assert id(module) not in factored and len(factored) == len(plan.layers)
