"""--refine-sweeps: ALS rounds on HT-2 factors (HOOI on Tucker-2) lower the weight error at the
same ranks, never raise it, keep full-rank factors exact, and reach compress, sensitivity,
compare, the data-aware fit and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import ht2
from ht2.cli.main import main
from ht2.dataaware import DataAwareOptions, compress_data_aware
from ht2.decomp import HT2Ranks
from ht2.decomp.ht2 import ht2_decompose, ht2_reconstruct
from ht2.errors import HT2Error
from ht2.experiments.compare import run_compare
from ht2.layers import factorize
from ht2.surgery import sensitivity
from ht2.surgery.budget import make_budget
from ht2.surgery.sensitivity import SensitivityOptions, measure
from ht2.surgery.targets import Target
from tests._shared import rel_error


def _kernel(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A 16 x 12 x 3 x 3 kernel whose spectra decay but are not low rank."""
    torch.manual_seed(0)
    scales = torch.logspace(0, -1.5, 12, dtype=dtype)
    return torch.randn(16, 12, 3, 3, dtype=dtype) * scales[None, :, None, None]


def test_zero_sweeps_are_the_papers_factors() -> None:
    kernel = _kernel()
    ranks = HT2Ranks(5, 7, 6)
    plain, again = ht2_decompose(kernel, ranks=ranks), ht2_decompose(kernel, ranks=ranks, sweeps=0)
    for name in ("u1", "g1", "g2", "u3"):
        assert torch.equal(getattr(plain, name), getattr(again, name))


def test_sweeps_never_raise_the_error_and_report_the_true_one() -> None:
    kernel = _kernel()
    ranks = HT2Ranks(5, 7, 6)
    errors = [ht2_decompose(kernel, ranks=ranks, sweeps=n).rel_error for n in (0, 1, 2, 5, 10)]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(errors, errors[1:], strict=False))
    assert errors[-1] < errors[0] - 1e-3  # a real gain on a kernel that is not low rank
    refined = ht2_decompose(kernel, ranks=ranks, sweeps=10)
    assert refined.rel_error == pytest.approx(rel_error(ht2_reconstruct(refined), kernel), rel=1e-9)
    assert refined.ranks == ranks
    assert refined.u1.shape == (12, 5) and refined.g1.shape == (5, 3, 7)
    assert refined.g2.shape == (7, 6, 3) and refined.u3.shape == (16, 6)
    assert torch.allclose(refined.u1.T @ refined.u1, torch.eye(5, dtype=torch.float64))


def test_full_rank_factors_stay_exact_after_sweeps() -> None:
    kernel = _kernel()
    factors = ht2_decompose(kernel, ranks=HT2Ranks(12, 36, 16), sweeps=3)
    assert rel_error(ht2_reconstruct(factors), kernel) < 1e-10


def test_degenerate_kernels_stay_finite_and_exact() -> None:
    torch.manual_seed(3)
    rank_one = torch.einsum("t,c,h,w->tchw", *(torch.randn(n) for n in (8, 6, 3, 3)))
    for kernel in (torch.zeros(8, 6, 3, 3), rank_one):
        factors = ht2_decompose(kernel, ranks=HT2Ranks(4, 5, 4), sweeps=5)
        rebuilt = ht2_reconstruct(factors)
        assert torch.isfinite(rebuilt).all()
        assert torch.linalg.norm(rebuilt - kernel) <= 1e-5 * max(1.0, float(kernel.norm()))


def test_negative_sweeps_are_refused() -> None:
    with pytest.raises(ValueError, match="sweeps must be >= 0"):
        ht2_decompose(_kernel(), ranks=HT2Ranks(2, 2, 2), sweeps=-1)
    with pytest.raises(HT2Error, match="refine_sweeps must be 0 or more"):
        ht2.compress(nn.Sequential(nn.Conv2d(8, 8, 3)), refine_sweeps=-1)


def test_refined_layer_computes_its_refined_kernel() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(12, 16, 3, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(_kernel(torch.float32))
    ranks = {"r1": 5, "r13": 7, "r3": 6}
    plain, refined = (
        factorize(conv, "ht2", ranks=ranks),
        factorize(conv, "ht2", ranks=ranks, sweeps=8),
    )
    assert refined.rel_error < plain.rel_error
    x = torch.randn(2, 12, 9, 9)
    expected = nn.functional.conv2d(x, refined.dense_weight(), conv.bias, padding=1)
    assert torch.allclose(refined(x), expected, atol=1e-5)
    # Tucker-2 takes the same argument (HOOI); SVD is optimal already and ignores it
    tucker = factorize(conv, "tucker2", ranks={"r_in": 4, "r_out": 5})
    assert factorize(conv, "tucker2", ranks={"r_in": 4, "r_out": 5}, sweeps=5).rel_error <= (
        tucker.rel_error + 1e-6
    )
    svd = factorize(conv, "svd", ranks={"r": 4})
    assert factorize(conv, "svd", ranks={"r": 4}, sweeps=5).rel_error == svd.rel_error


def _net() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 24, 3, padding=1),
        nn.BatchNorm2d(24),
        nn.ReLU(),
        nn.Conv2d(24, 24, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 10),
    ).eval()


def test_compress_refines_every_ht2_layer_at_the_same_size() -> None:
    example = torch.zeros(1, 3, 8, 8)
    plain_model, refined_model = _net(), _net()
    plain = ht2.compress(plain_model, energy=0.6, example_input=example)
    refined = ht2.compress(refined_model, energy=0.6, example_input=example, refine_sweeps=5)
    assert refined.refine_sweeps == 5 and plain.refine_sweeps == 0
    assert refined.params_after == plain.params_after
    pairs = [(a, b) for a, b in zip(plain.layers, refined.layers, strict=True) if a.method == "ht2"]
    assert pairs
    for before, after in pairs:
        assert after.ranks == before.ranks
        assert after.rel_error <= before.rel_error + 1e-6
    assert any(after.rel_error < before.rel_error - 1e-4 for before, after in pairs)


def test_sensitivity_measures_factors_refined_as_compress_will(monkeypatch) -> None:
    model = _net()
    seen: list[int] = []

    def recording(layer, method, energy=None, ranks=None, sweeps=0):
        seen.append(sweeps)
        return factorize(layer, method, energy=energy, ranks=ranks, sweeps=sweeps)

    monkeypatch.setattr(sensitivity, "factorize", recording)
    example = torch.zeros(1, 3, 8, 8)
    budget = make_budget(model, "ht2", Target("params", 2), example)
    images = torch.randn(8, 3, 8, 8)
    measure(model, budget, images, SensitivityOptions(candidates=(0.5,), sweeps=4))
    assert seen and set(seen) == {4}
    with pytest.raises(HT2Error, match="^refine_sweeps must be 0 or more"):
        SensitivityOptions(sweeps=-2).check()


def test_compare_rows_carry_the_sweeps() -> None:
    kwargs = dict(score=None, calibrate=None, batch_sizes=[], progress=False)
    targets = [Target("params", 2)]
    _, plain = run_compare(_net, (3, 8, 8), targets, ["ht2"], **kwargs)
    _, refined = run_compare(_net, (3, 8, 8), targets, ["ht2"], refine_sweeps=5, **kwargs)
    assert refined[0].params == plain[0].params
    assert refined[0].weight_error < plain[0].weight_error


def test_cli_flag_reaches_the_report_and_bad_values_exit_2(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r20"
    args = ["compress", "cifar10_resnet20", "--random-init", "--energy", "0.6", "--out", str(out)]
    assert main([*args, "--refine-sweeps", "3"]) == 0
    stdout = capsys.readouterr().out
    assert "refined by 3 ALS/HOOI sweeps" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["refine_sweeps"] == 3
    model = ht2.load(out)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert main([*args[:-1], str(tmp_path / "bad"), "--refine-sweeps", "-1"]) == 2
    assert "expected a whole number >= 0, got '-1'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_data_aware_fit_starts_from_the_refined_factors() -> None:
    torch.manual_seed(4)
    images = torch.randn(64, 3, 8, 8)
    options = DataAwareOptions(mode="refit", refit="last", bn="never")
    example = torch.zeros(1, 3, 8, 8)
    runs = {}
    for sweeps in (0, 5):
        report = compress_data_aware(
            _net(),
            images.split(32),
            energy=0.6,
            calib_images=64,
            options=options,
            example_input=example,
            refine_sweeps=sweeps,
        )
        runs[sweeps] = {
            e.name: e.calib_errors["plain"] for e in report.replaced if e.method == "ht2"
        }
        assert report.refine_sweeps == sweeps
    assert runs[0].keys() == runs[5].keys() and runs[0]
    assert any(abs(runs[0][name] - runs[5][name]) > 1e-6 for name in runs[0])


def test_cli_does_not_claim_sweeps_for_cp(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cp"
    args = ["compress", "cifar10_resnet20", "--random-init", "--method", "cp", "--energy", "0.5"]
    assert main([*args, "--refine-sweeps", "3", "--out", str(out)]) == 0
    assert "ALS/HOOI sweeps" not in capsys.readouterr().out
