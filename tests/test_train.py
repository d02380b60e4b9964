"""Training: the shared loop, checkpoints and exact resume, finetune/calibrate, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import ht2
from ht2.cli.main import main
from ht2.train import TrainConfig, recalibrate_batchnorm, recipe_config
from ht2.train.schedules import build_scheduler
from tests._training import assert_same_tensors, checkpoint_meta, kill_at_epoch, torchrun

FAST = ["--batch-size", "8", "--workers", "0", "--lr", "0.05"]


def _train(tiny: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "train",
            "cifar10_resnet20",
            "--data",
            str(tiny),
            "--epochs",
            "2",
            *FAST,
            "--out",
            str(out),
            *extra,
        ]
    )


def test_train_writes_best_model_log_and_checkpoint(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _train(tiny, out) == 0
    assert {"model.safetensors", "ht2.json", "log.jsonl", "checkpoint"} <= {
        p.name for p in out.iterdir()
    }
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert {"lr", "loss", "top1", "top5", "seconds"} <= set(lines[0])
    model = ht2.load(out)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_resume_after_an_interrupt_equals_a_straight_run(
    tiny: Path, tmp_path: Path, monkeypatch
) -> None:
    straight = tmp_path / "straight"
    assert _train(tiny, straight) == 0
    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        kill_at_epoch(patch, epoch=2)
        assert _train(tiny, resumed) == 130
    assert checkpoint_meta(resumed)["epoch"] == 1
    assert _train(tiny, resumed, "--resume") == 0
    assert_same_tensors(straight, resumed)
    log = [json.loads(line)["epoch"] for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2]


def test_max_steps_stops_early(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _train(tiny, out, "--max-steps", "2", "--epochs", "5") == 0
    lines = (out / "log.jsonl").read_text().splitlines()
    assert len(lines) == 1


def test_existing_output_needs_resume_or_force(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert _train(tiny, out, "--max-steps", "1") == 0
    (out / "other.txt").write_text("x")
    assert _train(tiny, out) == 2
    assert "use --resume" in capsys.readouterr().err
    assert _train(tiny, out, "--force", "--max-steps", "1") == 0
    assert not (out / "other.txt").exists()


def test_force_does_not_start_again_in_a_folder_ht2_did_not_write(
    tiny: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "other.txt").write_text("x")
    assert _train(tiny, out, "--force", "--max-steps", "1") == 2
    assert "not written by ht2" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["other.txt"]


def test_resume_without_checkpoint(tiny: Path, tmp_path: Path, capsys) -> None:
    assert _train(tiny, tmp_path / "none", "--resume") == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_checkpoint_of_another_model_is_refused(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert _train(tiny, out, "--max-steps", "1") == 0
    code = main(
        [
            "train",
            "cifar10_resnet32",
            "--data",
            str(tiny),
            "--epochs",
            "2",
            *FAST,
            "--out",
            str(out),
            "--resume",
        ]
    )
    assert code == 2
    assert "another model" in capsys.readouterr().err


def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(
    tiny: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import ht2.train.loop as loop

    real = loop.F.cross_entropy
    calls = {"n": 0}

    def goes_nan_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 3 else loss

    out = tmp_path / "run"
    monkeypatch.setattr(loop.F, "cross_entropy", goes_nan_in_epoch_two)
    assert _train(tiny, out) == 2
    assert "the loss became nan" in capsys.readouterr().err
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["meta"]["epoch"] == 1


def test_resume_refuses_a_changed_one_cycle(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert _train(tiny, out, "--epochs", "1") == 0
    assert _train(tiny, out, "--resume", "--epochs", "3") == 2
    assert "same --epochs" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPU")
def test_cuda_without_gpu(tiny: Path, tmp_path: Path, capsys) -> None:
    assert _train(tiny, tmp_path / "run", "--device", "cuda") == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_finetune_calibrates_evaluates_and_writes_a_compressed_folder(
    tiny: Path, compressed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    code = _finetune(compressed, tiny, out, "--calib-images", "16")
    assert code == 0
    model = ht2.load(out)
    assert isinstance(model.layer1[0].conv1, ht2.layers.HT2Conv2d)
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"]["epoch"] in (0, 1) and "top1" in report["accuracy"]
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1]


def _finetune(compressed: Path, tiny: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "finetune",
            str(compressed),
            "--data",
            str(tiny),
            "--epochs",
            "1",
            *FAST,
            *extra,
            "--out",
            str(out),
        ]
    )


def test_finetune_with_distillation_needs_teacher_weights(
    tiny: Path, compressed: Path, tmp_path: Path, capsys
) -> None:
    assert _finetune(compressed, tiny, tmp_path / "kd", "--distill") == 2
    assert "--teacher-weights" in capsys.readouterr().err
    teacher = tmp_path / "teacher.pth"
    torch.save(ht2.models.create("cifar10_resnet20", num_classes=3).state_dict(), teacher)
    code = _finetune(
        compressed, tiny, tmp_path / "kd", "--distill", "--teacher-weights", str(teacher)
    )
    assert code == 0


def test_calibrate_changes_only_batchnorm_statistics(
    tiny: Path, compressed: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "cal"
    assert (
        main(
            [
                "calibrate",
                str(compressed),
                "--data",
                str(tiny),
                "--images",
                "16",
                "--workers",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    before = load_file(str(compressed / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("running_" in k or "num_batches" in k for k in changed)


def test_recalibration_averages_over_the_images_seen() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    images = torch.randn(64, 3, 5, 5) * 3 + 1
    batches = [(images[i : i + 16], torch.zeros(16)) for i in range(0, 64, 16)]
    used = recalibrate_batchnorm(model, batches, images=48, progress=False)
    assert used == 48
    features = model[0](images[:48]).detach()
    expected = features.mean((0, 2, 3))
    torch.testing.assert_close(model[1].running_mean, expected, rtol=1e-4, atol=1e-5)
    assert model[1].momentum == 0.1 and not model.training


def test_recipes_fill_and_flags_override() -> None:
    config = recipe_config("densenet40-cifar10").updated(lr=0.05, epochs=None)
    assert (config.lr, config.epochs, config.milestones) == (0.05, 300, [150, 225])
    assert recipe_config(None) == TrainConfig()
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_config("nope")


@pytest.mark.parametrize("schedule", ["onecycle", "multistep", "step", "constant"])
def test_schedules_build_and_step(schedule: str) -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    scheduler, per_step = build_scheduler(schedule, optimizer, 0.1, 3, 4, [1, 2], 1, 0.1)
    for _ in range(12 if per_step else 3):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] < 0.1 or schedule == "constant"


def test_help_shows_defaults(capsys) -> None:
    assert main(["finetune", "--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: finetune-cifar10)" in text and "(default: 0.01)" in text


@pytest.mark.slow
def test_two_process_gloo_finetune_agrees_and_only_rank0_writes(
    tiny: Path, compressed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp"
    args = ["finetune", str(compressed), "--data", str(tiny), "--epochs", "2", *FAST]
    done = torchrun(*args, "--calib-images", "16", "--out", str(out))
    assert "all 2 processes hold identical weights" in done.stderr
    assert "= 4 per process x 2 process(es)" in done.stderr
    epochs = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]  # one writer: no line twice
    assert ht2.load(out)(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_global_batch_must_divide_among_processes() -> None:
    from ht2.errors import HT2Error
    from ht2.train.distributed import World
    from ht2.train.runner import _per_process_batch

    world = World(rank=0, size=3, local_rank=0, device=torch.device("cpu"))
    assert _per_process_batch(TrainConfig(batch_size=12), world) == 4
    with pytest.raises(HT2Error, match="divisible by the 3 torchrun processes"):
        _per_process_batch(TrainConfig(batch_size=128), world)


def test_an_interrupted_run_says_where_its_checkpoint_is(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "run"
    kill_at_epoch(monkeypatch, epoch=2)
    assert _train(tiny, out) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"ht2: interrupted; the checkpoint of the last finished epoch is in {out / 'checkpoint'}; "
        "add --resume to the same command to go on from it"
    )
    assert checkpoint_meta(out)["epoch"] == 1


def test_a_run_interrupted_before_its_first_checkpoint_wrote_nothing(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    kill_at_epoch(monkeypatch, epoch=1)
    assert _train(tiny, tmp_path / "run") == 130
    assert (
        capsys.readouterr().err.strip().splitlines()[-1] == "ht2: interrupted; nothing was written"
    )
