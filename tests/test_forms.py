"""Execution forms: every form computes what the plain factors do; plans record and rebuild it;
`--latency-aware` keeps the fastest form timed and says so in the report."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import ht2
from ht2.cli.main import main
from ht2.cli.tables import report_table
from ht2.decomp import HT2Ranks
from ht2.errors import HT2Error
from ht2.layers import ConvSpec, HT2Conv2d, build_factorized, factorize
from ht2.metrics.treatment import Treatment
from ht2.surgery import CompressionReport, LayerReport
from ht2.surgery.latency_aware import choose_forms, record_forms
from tests._shared import CONV_GEOMETRIES, PADDING_MODES, grid_conv, rel_error

GRID = list(itertools.product(CONV_GEOMETRIES, PADDING_MODES, [True, False]))
HT2_FORMS = ("merged_core", "merged_in", "two", "merged_out", "outer", "dense")


def _rebuilt(layer: nn.Module) -> nn.Module:
    """`layer` rebuilt from its plan entry (through JSON) with its tensors loaded."""
    rebuilt = build_factorized(json.loads(json.dumps(layer.plan_entry())))
    rebuilt.load_state_dict(layer.state_dict(), strict=True)
    return rebuilt


@pytest.mark.parametrize(("geometry", "mode", "bias"), GRID)
def test_every_ht2_form_computes_what_the_four_convolutions_do(geometry, mode, bias) -> None:
    layer = factorize(grid_conv(geometry, mode, bias), "ht2", energy=0.8)
    x = torch.randn(2, 6, 13, 14)
    with torch.no_grad():
        expected = layer(x)
        for form in HT2_FORMS:
            other = layer.in_form(form)
            assert rel_error(other(x), expected) < 1e-5, form
            if form != "dense":
                assert other.form == form
                assert rel_error(_rebuilt(other)(x), expected) < 1e-5, form


def test_merged_forms_have_the_merged_kernels() -> None:
    conv = nn.Conv2d(8, 10, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    layer = HT2Conv2d.from_dense(conv, ranks=HT2Ranks(r1=3, r13=4, r3=5))
    core = layer.in_form("merged_core")
    assert [name for name, _ in core.named_children()] == ["reduce", "core", "expand"]
    assert core.core.weight.shape == (5, 3, 3, 5) and core.core.stride == (2, 1)
    assert core.core.padding == (1, 2) and core.core.dilation == (1, 2)
    merged_in = layer.in_form("merged_in")
    assert [n for n, _ in merged_in.named_children()] == ["reduce_vertical", "horizontal", "expand"]
    assert merged_in.reduce_vertical.weight.shape == (4, 8, 3, 1)
    two = layer.in_form("two")
    assert [name for name, _ in two.named_children()] == ["reduce_core", "expand"]
    assert two.reduce_core.weight.shape == (5, 8, 3, 5) and two.reduce_core.padding == (1, 2)
    dense = layer.in_form("dense")
    assert type(dense) is nn.Conv2d and ConvSpec.of(dense) == ConvSpec.of(conv)


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("method", ["tucker2", "spatial_svd", "cp", "svd"])
def test_dense_form_of_every_method_computes_what_its_factors_do(method: str, mode: str) -> None:
    kernel, stride, padding, dilation = CONV_GEOMETRIES[2]
    conv = grid_conv((kernel, stride, padding, dilation), mode, bias=True)
    layer = factorize(conv, method, ranks={"r": 3, "r_in": 3, "r_out": 4})
    assert layer.available_forms() == (layer.default_form, "dense")
    x = torch.randn(2, 6, 13, 14)
    with torch.no_grad():
        dense = layer.in_form("dense")
        assert type(dense) is nn.Conv2d and rel_error(dense(x), layer(x)) < 1e-5
    assert factorize(conv, "tucker2", energy=0.9).default_form == "three"


def test_dense_form_of_a_linear_layer() -> None:
    layer = factorize(nn.Linear(12, 5), "svd", energy=0.7)
    x = torch.randn(3, 12)
    dense = layer.in_form("dense")
    assert type(dense) is nn.Linear and rel_error(dense(x), layer(x)) < 1e-5


def test_plan_records_the_form_only_when_it_is_not_the_default() -> None:
    layer = factorize(nn.Conv2d(4, 6, 3, padding=1), "ht2", energy=0.9)
    assert "form" not in layer.plan_entry()
    assert layer.in_form("merged_core").plan_entry()["form"] == "merged_core"
    old_style = {key: value for key, value in layer.plan_entry().items() if key != "form"}
    rebuilt = build_factorized(old_style)
    assert type(rebuilt) is HT2Conv2d and rebuilt.form == "four"


def test_forms_that_cannot_be_reached_exactly_are_refused() -> None:
    layer = factorize(nn.Conv2d(4, 6, 3, padding=1), "ht2", energy=0.9)
    merged = layer.in_form("merged_core")
    assert merged.available_forms() == ("merged_core", "dense")
    with pytest.raises(HT2Error, match="cannot run as 'four'"):
        merged.in_form("four")
    with pytest.raises(HT2Error, match="cannot run as 'merged_core'"):
        factorize(nn.Conv2d(4, 6, 3), "tucker2", energy=0.9).in_form("merged_core")
    entry = {**layer.plan_entry(), "form": "merged_all"}
    with pytest.raises(HT2Error, match="unknown form .merged_all. for method .ht2."):
        build_factorized(entry)


def test_a_bias_folded_into_expand_survives_every_form() -> None:
    layer = factorize(nn.Conv2d(4, 6, 3, padding=1, bias=False), "ht2", energy=0.9)
    layer.expand.bias = nn.Parameter(torch.randn(6))  # as BatchNorm folding leaves it
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        for form in HT2_FORMS:
            assert rel_error(layer.in_form(form)(x), layer(x)) < 1e-5, form


def _forms_from(before: str) -> tuple[str, ...]:
    """Every form a freshly decomposed layer in form `before` can take."""
    return ("four", *HT2_FORMS) if before == "four" else (before, "dense")


def _form(module: nn.Module) -> str:
    """A factorized module's form; "dense" for a plain layer."""
    return getattr(module, "form", "dense")


def _resnet20() -> tuple[nn.Module, torch.Tensor]:
    model = ht2.models.create("cifar10_resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    return model, x


def test_save_and_load_rebuild_each_layers_form(tmp_path: Path) -> None:
    model, x = _resnet20()
    report = ht2.compress(model, energy=0.7, example_input=x)
    forms = {
        "layer1.0.conv1": "merged_core",
        "layer2.1.conv2": "merged_in",
        "layer2.0.conv1": "merged_out",  # stride 2: the wide expand takes the width's stride
        "layer3.1.conv1": "outer",
        "conv1": "dense",
    }
    for name, form in forms.items():
        model.set_submodule(name, model.get_submodule(name).in_form(form))
    with torch.no_grad():
        expected = model(x)
    loaded = ht2.load(ht2.save(model, tmp_path / "m", report))
    assert loaded.get_submodule("layer1.0.conv1").form == "merged_core"
    assert loaded.get_submodule("layer2.1.conv2").form == "merged_in"
    assert loaded.get_submodule("layer2.0.conv1").form == "merged_out"
    assert loaded.get_submodule("layer3.1.conv1").form == "outer"
    assert loaded.get_submodule("layer1.0.conv2").form == "four"
    assert type(loaded.get_submodule("conv1")) is nn.Conv2d
    with torch.no_grad():
        assert rel_error(loaded(x), expected) < 1e-6


@pytest.mark.slow
def test_choose_forms_with_allow_dense_keeps_the_fastest_form_and_the_outputs() -> None:
    model, x = _resnet20()
    report = ht2.compress(model, energy=0.7, example_input=x)
    with torch.no_grad():
        expected = model(x)
    chosen = choose_forms(model, x, batch_size=2, threads=1, repeats=2, warmup=1, allow_dense=True)
    assert [c.name for c in chosen.layers] == [line.name for line in report.replaced]
    assert set(chosen.model_ms) == {"per_layer", "as_decomposed", "dense"}
    assert chosen.kept == min(chosen.model_ms, key=chosen.model_ms.__getitem__)
    for choice in chosen.layers:
        assert set(choice.times_ms) == set(_forms_from(choice.before)) and not choice.over_budget
        fastest = min(choice.times_ms, key=choice.times_ms.__getitem__)
        layouts = {"per_layer": fastest, "as_decomposed": choice.before, "dense": "dense"}
        assert choice.form == layouts[chosen.kept] == _form(model.get_submodule(choice.name))
        assert choice.input_shape[0] == 2
    with torch.no_grad():
        assert rel_error(model(x), expected) < 1e-5
    record_forms(report, chosen, model, x)
    line, choice = report.layers[1], chosen.layers[1]
    assert line.form == choice.form and line.form_times_ms == choice.times_ms
    assert report.params_after == sum(p.numel() for p in model.parameters())


def _sizes(report: CompressionReport) -> dict[str, tuple[int, int | None]]:
    return {line.name: (line.params_after, line.macs_after) for line in report.layers}


@pytest.mark.slow
def test_without_allow_dense_no_layer_grows_and_none_becomes_dense() -> None:
    model, x = _resnet20()
    report = ht2.compress(model, energy=0.7, example_input=x, keep_if_larger=False)
    plain = _sizes(report)
    plain_reductions = (report.param_reduction, report.mac_reduction)
    chosen = choose_forms(model, x, batch_size=2, threads=1, repeats=1, warmup=0)
    record_forms(report, chosen, model, x)
    assert set(chosen.model_ms) == {"per_layer", "as_decomposed", "dense"}
    assert chosen.kept == min(("per_layer", "as_decomposed"), key=chosen.model_ms.__getitem__)
    speedup = chosen.model_ms["dense"] / chosen.model_ms[chosen.kept]
    assert report.latency_aware["speedup_vs_dense"] == pytest.approx(speedup)
    for choice in chosen.layers:
        assert choice.form != "dense" and "dense" in choice.over_budget
        assert "dense" not in choice.times_ms
        assert set(choice.times_ms) | set(choice.over_budget) == set(_forms_from(choice.before))
    for name, (params, macs) in _sizes(report).items():
        assert params <= plain[name][0] and macs <= plain[name][1], name
    kept_as_decomposed = [c.name for c in chosen.layers if c.form == c.before]
    assert all(_sizes(report)[name] == plain[name] for name in kept_as_decomposed)
    assert report.param_reduction >= plain_reductions[0]
    assert report.mac_reduction >= plain_reductions[1]
    assert len(report.replaced) == len(chosen.layers)
    assert report.latency_aware["kept_dense"] == [] and not report.latency_aware["allow_dense"]


@pytest.mark.slow
def test_only_the_default_form_keeps_the_size_exactly() -> None:
    model, x = _resnet20()
    report = ht2.compress(model, energy=0.7, example_input=x)
    plain = (report.params_after, report.macs_after, _sizes(report))
    chosen = choose_forms(model, x, repeats=1, warmup=0, forms=("four", "factors", "three"))
    record_forms(report, chosen, model, x)
    assert all(c.form == c.before for c in chosen.layers)
    assert (report.params_after, report.macs_after, _sizes(report)) == plain
    assert "kept dense" not in report_table(report)


@pytest.mark.parametrize(
    "treatment",
    [
        pytest.param(Treatment(channels_last=True), marks=pytest.mark.slow),
        pytest.param(Treatment(dtype="bfloat16"), marks=pytest.mark.slow),
        Treatment("bfloat16", True),
    ],
)
def test_forms_timed_in_a_treatment_compute_what_the_four_convolutions_do(treatment) -> None:
    model, x = _resnet20()
    ht2.compress(model, energy=0.7, example_input=x)
    with torch.no_grad():
        expected = model(x)
    chosen = choose_forms(model, x, repeats=1, warmup=0, treatment=treatment, allow_dense=True)
    assert chosen.treatment == treatment
    with torch.no_grad():
        assert rel_error(model(x), expected) < 1e-5
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_forms_are_not_timed_folded_or_in_onnxruntime() -> None:
    model, x = _resnet20()
    ht2.compress(model, energy=0.7, example_input=x, include=["layer1.0.conv1"])
    for treatment in (Treatment(runtime="onnxruntime"), Treatment(fold_bn=True)):
        with pytest.raises(HT2Error, match="forms are timed in eager or compile"):
            choose_forms(model, x, repeats=1, warmup=0, treatment=treatment)
    with pytest.raises(HT2Error, match="allow_dense"):
        choose_forms(model, x, repeats=1, warmup=0, forms=("dense",))


def test_choose_forms_limited_to_dense_restores_the_original_sizes() -> None:
    model, x = _resnet20()
    params = sum(p.numel() for p in model.parameters())
    report = ht2.compress(model, energy=0.7, example_input=x)
    factors = (report.param_reduction, report.mac_reduction)
    chosen = choose_forms(
        model, x, repeats=1, warmup=0, forms=("dense",), check_model=False, allow_dense=True
    )
    record_forms(report, chosen, model, x)
    assert chosen.kept == "per_layer" and not chosen.model_ms
    assert all(c.form == "dense" for c in chosen.layers)
    assert report.params_after == params and report.macs_after == report.macs_before
    assert all(line.params_after == line.params_before for line in report.layers)
    assert report.replaced == []
    table = report_table(report)
    layers = len(chosen.layers)
    assert f"0 of {len(report.layers)} layers replaced" in table
    assert (
        f"{layers} of {layers} layers kept dense for speed; params 1.00x instead of "
        f"{factors[0]:.2f}x, MACs 1.00x instead of {factors[1]:.2f}x"
    ) in table
    names = {line.name for line in report.layers}
    lines = [cells for cells in map(str.split, table.splitlines()) if cells]
    rows = {cells[0]: cells for cells in lines if cells[0] in names}
    assert rows.keys() == names
    assert rows["layer1.0.conv1"][1:3] == ["ht2->dense", "dense"]
    assert not any(row[1] == "ht2" for row in rows.values())


def test_report_json_with_and_without_forms_reads_back() -> None:
    line = LayerReport("a", "Conv2d", "ht2", form="merged_core", form_times_ms={"four": 1.5})
    report = CompressionReport("m", "ht2", 0.9, True, 10, 5, None, None, 0.1, layers=[line])
    again = CompressionReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.layers[0].form == "merged_core" and again.layers[0].form_times_ms == {"four": 1.5}
    old = report.to_dict()
    for layer in old["layers"]:
        del layer["form"], layer["form_times_ms"]
    assert CompressionReport.from_dict(old).layers[0].form is None


@pytest.mark.slow
def test_cli_latency_aware_writes_forms_into_report_and_plan(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r20"
    args = ["compress", "cifar10_resnet20", "--random-init", "--energy", "0.7", "--out", str(out)]
    assert main([*args, "--latency-aware", "--batch-size", "2", "--threads", "1"]) == 0
    assert "form kept" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    replaced = [line for line in report["layers"] if line["method"] != "dense"]
    assert replaced and all(line["form"] in line["form_times_ms"] for line in replaced)
    plan = {entry["name"]: entry for entry in json.loads((out / "ht2.json").read_text())["plan"]}
    loaded = ht2.load(out)
    for line in replaced:
        assert _form(loaded.get_submodule(line["name"])) == line["form"]
        assert (line["name"] in plan) == (line["form"] != "dense")


@pytest.mark.slow
def test_a_target_with_latency_aware_reports_the_reduction_forms_leave(tmp_path, capsys) -> None:
    out = tmp_path / "t"
    args = ["compress", "cifar10_resnet20", "--random-init", "--target-params", "3", "--out"]
    assert main([*args, str(out), "--latency-aware", "--batch-size", "2", "--threads", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["target"]["reached_after_forms"] == pytest.approx(report["param_reduction"])
    printed = capsys.readouterr().out
    changed = abs(report["param_reduction"] - report["target"]["reached"]) > 1e-9
    assert ("latency-aware forms then traded size for speed" in printed) == changed


def test_cli_refuses_a_bad_batch_size(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    args = ["compress", "cifar10_resnet20", "--random-init", "--latency-aware", "--out", str(out)]
    assert main([*args, "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "at least 1, got 0" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_latency_aware_keeps_the_size_and_shows_forms(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r20"
    args = ["compress", "cifar10_resnet20", "--random-init", "--energy", "0.7", "--out", str(out)]
    fast = ["--batch-size", "2", "--threads", "1"]
    assert main([*args, "--latency-aware", *fast, "--channels-last", "--dtype", "bfloat16"]) == 0
    printed = capsys.readouterr()
    assert "bfloat16, NHWC, eager" in printed.err
    header = printed.out.splitlines()[0].split()
    assert header[:4] == ["layer", "method", "form", "ranks"]
    assert "size kept (no --allow-dense)" in printed.out
    report = json.loads((out / "report.json").read_text())
    assert all(line["form"] != "dense" for line in report["layers"])
    aware = report["latency_aware"]
    assert (aware["dtype"], aware["memory_format"], aware["runtime"]) == (
        "bfloat16",
        "channels_last",
        "eager",
    )
    assert report["param_reduction"] >= aware["param_reduction_factors"]
    assert aware["over_budget"] and all("dense" in f for f in aware["over_budget"].values())
    conv1 = next(line for line in printed.err.splitlines() if line.startswith("conv1 "))
    assert "n/a" in conv1.split()  # an SVD layer has no HT-2 forms: not the same as not timed
    assert "n/a: not a form of that layer" in printed.err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--allow-dense"], "--allow-dense lets --latency-aware give size back"),
        (["--dtype", "bfloat16"], "--dtype says where --latency-aware"),
        (
            ["--latency-aware", "--runtime", "onnxruntime"],
            "--latency-aware times layers in eager or compile, not onnxruntime",
        ),
        (["--latency-aware", "--dtype", "half"], "invalid choice: 'half'"),
    ],
)
def test_cli_refuses_latency_flags_in_one_line(tmp_path: Path, capsys, extra, needle) -> None:
    out = tmp_path / "o"
    args = ["compress", "cifar10_resnet20", "--random-init", "--out", str(out), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_forms_timed_under_torch_compile_keep_the_outputs() -> None:
    conv = nn.Conv2d(4, 6, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU()).eval()
    x = torch.randn(1, 4, 8, 8)
    ht2.compress(model, energy=0.9, example_input=x)
    with torch.no_grad():
        expected = model(x)
    chosen = choose_forms(
        model, x, repeats=1, warmup=0, threads=1, treatment=Treatment(runtime="compile")
    )
    assert chosen.treatment.runtime == "compile" and chosen.layers
    with torch.no_grad():
        assert rel_error(model(x), expected) < 1e-5


def _plain_conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)
    ).eval()


QUICK = {"threads": 1, "repeats": 1, "warmup": 0}


def test_forms_planner_writes_the_fastest_forms_and_apply_runs_them() -> None:
    from ht2.planning import CompressOptions, plan_with
    from ht2.surgery.latency_aware import FormTiming

    model, x = _plain_conv_net(), torch.randn(1, 8, 12, 12)
    before = copy.deepcopy(model.state_dict())
    plan = plan_with("forms", model, x, CompressOptions(energy=0.8), timing=FormTiming(**QUICK))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert plan.provenance["forms"]["kept"] in ("per_layer", "as_decomposed")
    assert plan.provenance["forms"]["batch_size"] == 1
    forms = {layer.name: layer.form for layer in plan.layers}
    assert all(form is not None and form != "dense" for form in forms.values()), forms
    plain = copy.deepcopy(model)
    ht2.compress(plain, energy=0.8)
    report = ht2.apply(model, ht2.Plan.from_json(plan.to_json()), example_input=x)
    assert {name: model.get_submodule(name).form for name in forms} == forms
    assert {line.name: line.form for line in report.replaced} == forms
    with torch.no_grad():
        assert rel_error(model(x), plain(x)) < 1e-5


def test_a_data_aware_fit_runs_the_planned_forms() -> None:
    from ht2.dataaware import DataAwareFit, DataAwareOptions

    model, x = _plain_conv_net(), torch.randn(1, 8, 12, 12)
    plan = ht2.plan(model, x, energy=0.8)
    first = next(layer for layer in plan.layers if layer.method == "ht2")
    for layer in plan.layers:
        layer.fit = "data-aware"
    first.form = "merged_core"
    images = torch.randn(32, 8, 12, 12)
    fit = DataAwareFit([images], 32, DataAwareOptions(iterations=2), energy=0.8)
    report = ht2.apply(model, plan, fit=fit, example_input=x)
    layer = model.get_submodule(first.name)
    line = next(line for line in report.layers if line.name == first.name)
    assert layer.form == "merged_core" and line.form == "merged_core"
    assert line.params_after == sum(p.numel() for p in layer.parameters())


@pytest.mark.slow
def test_cli_plan_only_latency_aware_writes_forms_that_plan_replays(tmp_path: Path, cli) -> None:
    plan_path, out = tmp_path / "plan.json", tmp_path / "r20"
    head = ["compress", "cifar10_resnet20", "--random-init"]
    timing = ["--latency-aware", "--threads", "1", "--batch-size", "2"]
    code, _, err = cli([*head, "--energy", "0.6", *timing, "--plan-only", "--out", str(plan_path)])
    assert code == 0, err
    data = json.loads(plan_path.read_text())
    assert data["provenance"]["forms"]["batch_size"] == 2
    forms = {layer["name"]: layer["form"] for layer in data["layers"]}
    assert all(forms.values())
    code, _, err = cli([*head, "--plan", str(plan_path), "--out", str(out)])
    assert code == 0, err
    model = ht2.load(out)
    assert {name: model.get_submodule(name).form for name in forms} == forms


@pytest.mark.parametrize("form", ["merged_out", "outer"])
def test_batchnorm_folds_into_a_wide_expand(form: str) -> None:
    from ht2.export.fold_bn import fold_batchnorms

    model, x = _resnet20()
    ht2.compress(model, energy=0.7, example_input=x)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # statistics far from the identity
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    name = "layer2.0.conv2"
    model.set_submodule(name, model.get_submodule(name).in_form(form))
    model.eval()
    with torch.no_grad():
        expected = model(x)
        folded, fold_report = fold_batchnorms(model, tuple(x.shape[1:]))
        assert any(pair["into"] == f"{name}.expand" for pair in fold_report.folded)
        assert rel_error(folded(x), expected) < 1e-5
