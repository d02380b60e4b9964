"""`ht2 sweep` is `ht2 compare` at fixed energies: the same row code, the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

import ht2
from ht2.cli.main import main
from ht2.experiments import sweep
from ht2.experiments.compare import Energy, fresh_copies, run_compare

INPUT = (3, 8, 8)


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def test_sweep_rows_are_the_compare_rows_at_those_energies() -> None:
    copies = fresh_copies(_net())
    options = {"batch_sizes": [], "progress": False, "keep_if_larger": False}
    _, swept = sweep(copies, INPUT, [0.9, 0.5], ["ht2", "tucker2"], **options)
    goals = [Energy(0.9), Energy(0.5)]
    _, compared = run_compare(copies, INPUT, goals, ["ht2", "tucker2"], **options)
    assert [(r.method, r.energy) for r in swept] == [
        ("ht2", 0.9),
        ("ht2", 0.5),
        ("tucker2", 0.9),
        ("tucker2", 0.5),
    ]
    by_goal = {(r.method, r.target_factor): r for r in compared}
    for row in swept:
        twin = by_goal[(row.method, row.energy)]
        assert (row.params, row.macs) == (twin.params, twin.macs)
        assert twin.met is True and twin.target_label == f"energy {row.energy:g}"


def test_a_row_that_cannot_be_compressed_names_method_and_energy() -> None:
    with pytest.raises(ht2.HT2Error, match=r"^ht2 at energy 1\.5: "):
        sweep(fresh_copies(_net()), INPUT, [1.5], batch_sizes=[], progress=False)


def test_energies_take_no_other_allocation() -> None:
    with pytest.raises(ht2.HT2Error, match="no allocation but uniform"):
        run_compare(_net, INPUT, [Energy(0.9)], ["ht2"], allocations={"other": dict})


def test_random_init_rows_share_one_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = ht2.models.create

    def counting(name: str, **kwargs) -> nn.Module:
        built.append(name)
        return real(name, **kwargs)

    monkeypatch.setattr(ht2.models, "create", counting)
    argv = ["sweep", "cifar10_resnet20", "--random-init", "--energies", "0.9,0.9"]
    argv += ["--batch-sizes", "1", "--repeats", "1", "--threads", "1", "--json"]
    assert main([*argv, "--out", str(tmp_path / "sweep")]) == 0
    assert built == ["cifar10_resnet20"]
