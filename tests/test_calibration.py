"""BatchNorm calibration as a library call (ht2.train.calibration) and as `ht2 calibrate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ht2
from ht2.cli.main import main
from ht2.train import calibrate_folder, calibrate_on_train_images
from tests._shared import write_image_tree


def test_calibrate_folder_writes_what_the_cli_writes(
    tiny: Path, compressed: Path, tmp_path: Path
) -> None:
    result = calibrate_folder(compressed, tmp_path / "lib", str(tiny), images=16, workers=0)
    assert result.images == 16
    argv = ["calibrate", str(compressed), "--data", str(tiny), "--images", "16"]
    assert main([*argv, "--workers", "0", "--out", str(tmp_path / "cli")]) == 0
    ours = load_file(str(tmp_path / "lib" / "model.safetensors"))
    theirs = load_file(str(tmp_path / "cli" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)


def test_by_default_a_small_data_set_is_used_whole(
    tiny: Path, compressed: Path, tmp_path: Path, capsys
) -> None:
    model = ht2.load(compressed)
    entry = ht2.models.get_entry(model.ht2_arch["name"])
    assert (
        calibrate_on_train_images(model, entry, str(tiny), None, 8, 0, progress=False).images == 24
    )
    argv = ["calibrate", str(compressed), "--data", str(tiny), "--json"]
    assert main([*argv, "--workers", "0", "--out", str(tmp_path / "cal")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"images": 24} and "note" not in err


def test_asking_for_more_images_than_the_split_holds_is_refused(
    tiny: Path, compressed: Path, tmp_path: Path, capsys
) -> None:
    model = ht2.load(compressed)
    entry = ht2.models.get_entry(model.ht2_arch["name"])
    with pytest.raises(ht2.HT2Error, match="only 24 training images .* fewer than the 100 asked"):
        calibrate_on_train_images(model, entry, str(tiny), 100, 8, 0, progress=False)
    for command in (
        ["calibrate", str(compressed), "--images", "100"],
        ["finetune", str(compressed), "--calib-images", "100", "--epochs", "1"],
    ):
        argv = [*command, "--data", str(tiny), "--workers", "0", "--out", str(tmp_path / "x")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "fewer than the 100 asked for calibration; lower --calib-images to 24" in err
        assert not (tmp_path / "x").exists()


def test_calibration_refuses_data_of_other_classes(tmp_path: Path, compressed: Path) -> None:
    two = write_image_tree(tmp_path / "two", classes=("a", "b"), per_class=2)
    with pytest.raises(ht2.HT2Error, match="2 class folders"):
        calibrate_folder(compressed, tmp_path / "out", str(two), images=4, workers=0)
    assert not (tmp_path / "out").exists()


def test_augmented_calibration_is_seeded_and_differs_from_the_plain_one(
    tiny: Path, compressed: Path, tmp_path: Path, capsys
) -> None:
    states = {}
    for name, extra in (("plain", []), ("aug1", ["--augment"]), ("aug2", ["--augment"])):
        argv = ["calibrate", str(compressed), "--data", str(tiny), "--images", "16", *extra]
        assert main([*argv, "--workers", "0", "--out", str(tmp_path / name)]) == 0
        states[name] = load_file(str(tmp_path / name / "model.safetensors"))
    means = [key for key in states["plain"] if key.endswith("running_mean")]
    assert means
    assert all(torch.equal(states["aug1"][key], states["aug2"][key]) for key in states["aug1"])
    assert any(not torch.equal(states["plain"][k], states["aug1"][k]) for k in means)
    assert "(training augmentation)" in capsys.readouterr().out


def _norm_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def _decide(monkeypatch, tiny: Path, compressed: Path, before: float, after: float):
    """calibrate_if_it_helps on the compressed folder, held_out_loss answering `before` then
    `after` (the decision alone is under test); the model, its statistics before, the result."""
    import ht2.train.calibration as calibration

    answers = iter([before, after])
    monkeypatch.setattr(calibration, "held_out_loss", lambda model, batches: next(answers))
    model = ht2.load(compressed)
    entry = ht2.models.get_entry(model.ht2_arch["name"])
    state = _norm_state(model)
    result = calibration.calibrate_if_it_helps(model, entry, str(tiny), None, 8, 0, progress=False)
    return model, state, result


def test_calibration_that_lowers_the_held_out_loss_is_kept(
    tiny: Path, compressed: Path, monkeypatch
) -> None:
    model, before, result = _decide(monkeypatch, tiny, compressed, before=2.0, after=1.5)
    assert result.images == 19  # 24 drawn, every fifth held out
    assert result.decision == {"held_out": 5, "loss_before": 2.0, "loss_after": 1.5, "kept": True}
    assert any(not torch.equal(v, before[k]) for k, v in _norm_state(model).items())
    assert result.describe() == (
        "BatchNorm statistics re-estimated on 19 training images; cross-entropy on 5 held-out "
        "ones 2.0000 -> 1.5000, kept"
    )


def test_calibration_that_does_not_lower_the_held_out_loss_is_undone(
    tiny: Path, compressed: Path, monkeypatch
) -> None:
    model, before, result = _decide(monkeypatch, tiny, compressed, before=1.0, after=1.0)
    assert not result.decision["kept"]
    assert all(torch.equal(v, before[k]) for k, v in _norm_state(model).items())
    assert result.describe().endswith("1.0000 -> 1.0000, declined: the model's own statistics stay")


def test_held_out_loss_is_the_mean_cross_entropy() -> None:
    from ht2.train.calibration import held_out_loss

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    images = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    batches = [(images[:4], labels[:4]), (images[:0], labels[:0]), (images[4:], labels[4:])]
    expected = torch.nn.functional.cross_entropy(model(images), labels).item()
    assert held_out_loss(model, batches) == pytest.approx(expected, rel=1e-6)


def test_finetune_says_what_its_calibration_decided(
    tiny: Path, compressed: Path, tmp_path: Path, capsys
) -> None:
    argv = ["finetune", str(compressed), "--data", str(tiny), "--epochs", "1", "--workers", "0"]
    argv += ["--batch-size", "8", "--max-steps", "1", "--eval-limit", "8", "--no-distill"]
    assert main([*argv, "--out", str(tmp_path / "ft")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "BatchNorm" in line]
    assert len(lines) == 1
    assert lines[0].startswith("BatchNorm statistics re-estimated on 19 training images; ")
    assert lines[0].endswith((", kept", "declined: the model's own statistics stay"))
    assert "cross-entropy on 5 held-out ones" in lines[0]
    assert main([*argv, "--calib-images", "1", "--out", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("not 1; give --calib-images 2 or more") and "\n" not in err
    assert not (tmp_path / "one").exists()
