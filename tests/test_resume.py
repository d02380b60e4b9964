"""--resume: a run killed anywhere and resumed ends bit for bit where a straight run ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import ht2
import ht2.train.checkpoint as checkpoint
from ht2.cli.main import main
from ht2.errors import HT2Error
from ht2.io.artefacts import save_into
from ht2.train import TrainConfig, fit
from ht2.train.seeding import EpochSampler, SeededImages
from tests._shared import write_image_tree
from tests._training import (
    Killed,
    assert_same_run,
    assert_same_tensors,
    checkpoint_meta,
    kill_at_epoch,
    run_log,
    run_tensors,
    torchrun,
)

ENTRY = ht2.models.get_entry("cifar10_resnet20")  # 3 x 32 x 32 CIFAR images and transforms
STEPS_PER_EPOCH = 6  # 24 training images, batches of 4


class Tiny(nn.Module):
    """A few hundred parameters, with BatchNorm and dropout so that every state matters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=4), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-memory path caches the decoded splits: here, never in the user's ~/.cache/ht2."""
    monkeypatch.setenv("HT2_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume-data")
    return write_image_tree(root, classes=("a", "b", "c"), per_class=8)


def _config(**changes) -> TrainConfig:
    base = TrainConfig(
        epochs=3, lr=0.05, batch_size=4, schedule="onecycle", workers=0, device="cpu", seed=3
    )
    return base.updated(**changes)


def _model(seed: int = 1) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def _run(data: Path, out: Path, config: TrainConfig, resume: bool = False) -> nn.Module:
    model = _model()
    teacher = _model(seed=2).eval() if config.distill else None
    fit(
        model,
        ENTRY,
        str(data),
        config,
        out,
        lambda trained, folder, _: save_into(trained, folder, None),
        teacher=teacher,
        resume=resume,
    )
    return model


def _killed_then_resumed(
    data: Path, out: Path, config: TrainConfig, monkeypatch: pytest.MonkeyPatch, **kill
) -> None:
    with monkeypatch.context() as patch:
        kill_at_epoch(patch, **kill)
        with pytest.raises(Killed):
            _run(data, out, config)
    _run(data, out, config, resume=True)


@pytest.mark.parametrize(
    "changes",
    [
        {"schedule": "onecycle"},
        {"schedule": "step", "step_size": 1, "gamma": 0.5},
        {"schedule": "multistep", "milestones": [1, 2]},
        {"distill": True, "distill_weight": 0.7, "lighting": 0.1, "label_smoothing": 0.1},
        {"epochs": 4, "max_steps": 15},
        {"ema": 0.9},
    ],
    ids=["onecycle", "step", "multistep", "distill", "max-steps-mid-epoch", "ema"],
)
def test_a_run_killed_after_an_epoch_resumes_bit_identical(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict
) -> None:
    config = _config(**changes)
    _run(data, tmp_path / "straight", config)
    _killed_then_resumed(data, tmp_path / "resumed", config, monkeypatch, epoch=2)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_a_kill_mid_epoch_replays_that_epoch_from_the_last_checkpoint(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config()
    _run(data, tmp_path / "straight", config)
    out = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        kill_at_epoch(patch, epoch=3, after_batches=4)
        with pytest.raises(Killed):
            _run(data, out, config)
    assert checkpoint_meta(out)["epoch"] == 2
    _run(data, out, config, resume=True)
    assert_same_run(tmp_path / "straight", out)


def test_max_steps_counts_the_steps_before_the_resume(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(epochs=4, max_steps=15, schedule="constant")
    out = tmp_path / "resumed"
    _killed_then_resumed(data, out, config, monkeypatch, epoch=2)
    assert checkpoint_meta(out)["steps"] == 15  # not 6 + 15: the count survives the resume
    assert [line["epoch"] for line in run_log(out)] == [1, 2, 3]


def test_resuming_a_finished_run_changes_nothing(data: Path, tmp_path: Path) -> None:
    config = _config(epochs=4, max_steps=8)
    out = tmp_path / "run"
    _run(data, out, config)
    before, log = run_tensors(out), run_log(out)
    _run(data, out, config, resume=True)
    after = run_tensors(out)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert run_log(out) == log and checkpoint_meta(out)["steps"] == 8


def test_a_kill_while_the_checkpoint_is_written_keeps_the_previous_one(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(schedule="step", step_size=1, gamma=0.5)
    _run(data, tmp_path / "straight", config)
    out = tmp_path / "resumed"
    real = checkpoint.save_file
    calls = {"n": 0}

    def dies_in_the_second_checkpoint(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # two files per checkpoint: the second checkpoint's second file
            raise Killed
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save_file", dies_in_the_second_checkpoint)
        with pytest.raises(Killed):
            _run(data, out, config)
    assert checkpoint_meta(out)["epoch"] == 1
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    _run(data, out, config, resume=True)
    assert_same_run(tmp_path / "straight", out)


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "files"])
def test_each_data_path_resumes_bit_identical(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    in_memory: bool,
) -> None:
    """Killed mid-epoch and resumed, in float32 and in bf16 autocast with channels_last."""
    for amp, channels_last in (("none", False), ("bf16", True)):
        config = _config(in_memory=in_memory, amp=amp, channels_last=channels_last)
        straight, resumed = tmp_path / f"straight-{amp}", tmp_path / f"resumed-{amp}"
        _run(data, straight, config)
        used = "decoded in memory" if in_memory else "decoded every epoch"
        assert used in capsys.readouterr().err
        with monkeypatch.context() as patch:
            kill_at_epoch(patch, epoch=2, after_batches=3)
            with pytest.raises(Killed):
                _run(data, resumed, config)
        _run(data, resumed, config, resume=True)
        assert_same_run(straight, resumed)


def test_resuming_with_other_precision_or_data_path_says_how_it_started(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    fixed = {"schedule": "constant"}
    _run(data, out, _config(epochs=1, amp="none", channels_last=False, in_memory=False, **fixed))
    assert checkpoint_meta(out)["computed"] == {
        "amp": "none",
        "channels_last": False,
        "in_memory": False,
    }
    capsys.readouterr()
    now = _config(amp="bf16", channels_last=True, in_memory=True, **fixed)
    _run(data, out, now.updated(epochs=2), resume=True)
    assert (
        "note: the checkpoint's run trained with --amp none --no-channels-last --no-in-memory, "
        "this one with --amp bf16 --channels-last --in-memory"
    ) in capsys.readouterr().err
    _run(data, out, now.updated(epochs=3), resume=True)
    assert "note: the checkpoint" not in capsys.readouterr().err


def test_a_checkpoint_from_before_the_record_was_trained_on_files_in_float32(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    before = _config(amp="bf16", channels_last=False, in_memory=False, schedule="constant")
    _run(data, out, before.updated(epochs=1))
    state_file = out / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    del state["meta"]["computed"]  # as ht2 wrote it before: bf16 then applied on CUDA only
    state_file.write_text(json.dumps(state))
    capsys.readouterr()
    _run(data, out, before.updated(epochs=2), resume=True)
    assert "trained with --amp none --no-channels-last --no-in-memory" in capsys.readouterr().err


def test_loader_processes_do_not_change_the_augmentations(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Persistent loader workers keep their generators across epochs; resumed, they start anew."""
    config = _config(workers=2, schedule="step", step_size=1, in_memory=False)
    _run(data, tmp_path / "straight", config)
    _killed_then_resumed(data, tmp_path / "resumed", config, monkeypatch, epoch=2)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")
    _run(data, tmp_path / "in-process", config.updated(workers=0))
    assert_same_tensors(tmp_path / "straight", tmp_path / "in-process")


def test_a_shorter_run_extended_by_resume_equals_the_longer_run(data: Path, tmp_path: Path) -> None:
    config = _config(epochs=3, schedule="step", step_size=2)
    _run(data, tmp_path / "straight", config)
    out = tmp_path / "extended"
    _run(data, out, config.updated(epochs=1))
    _run(data, out, config, resume=True)
    assert_same_run(tmp_path / "straight", out)


def test_a_one_cycle_over_other_steps_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(data, out, _config(epochs=2, max_steps=4))
    with pytest.raises(HT2Error, match="one-cycle schedule spans 8 steps"):
        _run(data, out, _config(epochs=2, max_steps=5), resume=True)


def test_each_image_gets_its_own_augmentation_seed_per_epoch(data: Path) -> None:
    from torch.utils.data import DistributedSampler

    from ht2.data import train_dataset

    images = SeededImages(train_dataset(str(data), ENTRY), seed=0)
    sampler = EpochSampler(DistributedSampler(images, num_replicas=1, rank=0, seed=0))
    sampler.set_epoch(1)
    keys = list(sampler)
    assert {epoch for epoch, _ in keys} == {1} and sorted(i for _, i in keys) == list(range(24))
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first = images[(1, 7)][0]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is untouched
    assert torch.equal(images[(1, 7)][0], first)
    assert not all(torch.equal(images[(epoch, 7)][0], first) for epoch in range(2, 6))


def _finetune(compressed: Path, data: Path, out: Path, teacher: Path, *extra: str) -> int:
    return main(
        [
            "finetune",
            str(compressed),
            "--data",
            str(data),
            "--epochs",
            "4",
            "--max-steps",
            "10",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--lr",
            "0.05",
            "--calib-images",
            "16",
            "--distill",
            "--teacher-weights",
            str(teacher),
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.mark.slow
def test_finetune_killed_after_two_epochs_resumes_to_the_same_model(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: --epochs 4 --max-steps 10 (3 steps an epoch), killed after epoch 2."""
    teacher_model = ht2.models.create("cifar10_resnet20", num_classes=3)
    teacher = tmp_path / "teacher.pth"
    torch.save(teacher_model.state_dict(), teacher)
    model = ht2.models.create("cifar10_resnet20", num_classes=3)
    model.load_state_dict(teacher_model.state_dict())
    report = ht2.compress(model, energy=0.7, example_input=torch.zeros(1, 3, 32, 32))
    compressed = ht2.save(model, tmp_path / "compressed", report)

    assert _finetune(compressed, data, tmp_path / "straight", teacher) == 0
    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        kill_at_epoch(patch, epoch=3)
        assert _finetune(compressed, data, resumed, teacher) == 130
    assert _finetune(compressed, data, resumed, teacher, "--resume") == 0
    assert checkpoint_meta(resumed)["steps"] == 10
    assert_same_run(tmp_path / "straight", resumed)


@pytest.mark.slow
def test_two_process_run_resumed_equals_a_straight_one(data: Path, tmp_path: Path) -> None:
    def train(out: Path, epochs: int, *extra: str) -> None:
        args = ["train", "cifar10_resnet20", "--data", str(data), "--epochs", str(epochs)]
        args += ["--batch-size", "8", "--workers", "0", "--lr", "0.05", "--schedule", "step"]
        torchrun(*args, "--step-size", "1", "--max-steps", "7", "--out", str(out), *extra)

    train(tmp_path / "straight", 4)
    train(tmp_path / "resumed", 1)
    train(tmp_path / "resumed", 4, "--resume")
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def _edit_state(out: Path, edit) -> None:
    path = out / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    edit(state)
    path.write_text(json.dumps(state))


def _rewrite_tensors(path: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def next_key(out: Path) -> str:
    """A momentum buffer's key in the checkpoint's optimizer file."""
    from safetensors import safe_open

    with safe_open(str(out / "checkpoint/optimizer.safetensors"), framework="pt") as tensors:
        return next(k for k in tensors.keys() if tensors.get_slice(k).get_shape())


def _one_tensor(key: str, edit):
    return lambda tensors: tensors.update({key: edit(tensors[key])})


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda out: (out / "checkpoint/model.safetensors").write_bytes(b"\0" * 100), "damaged"),
        (lambda out: (out / "checkpoint/optimizer.safetensors").unlink(), "damaged"),
        (lambda out: _edit_state(out, lambda s: s["meta"].update(epoch="1")), "meta.epoch is '1'"),
        (lambda out: _edit_state(out, lambda s: s.pop("scheduler")), "damaged"),
        (lambda out: _edit_state(out, lambda s: s.update(meta=[1])), "meta is a list"),
        (lambda out: _edit_state(out, lambda s: s["meta"].update(computed={})), "meta.computed"),
        (
            lambda out: _rewrite_tensors(
                out / "checkpoint/optimizer.safetensors",
                lambda t: t.update({"-1000.momentum_buffer": next(iter(t.values())).clone()}),
            ),
            "-1000.",
        ),
        (
            lambda out: _edit_state(out, lambda s: s["meta"].pop("best_epoch")),
            "meta.best_epoch is None",
        ),
        (
            lambda out: _rewrite_tensors(
                out / "checkpoint/optimizer.safetensors",
                _one_tensor(next_key(out), lambda v: v.flatten()[:1]),
            ),
            "has shape (1,)",
        ),
        (
            lambda out: _rewrite_tensors(
                out / "checkpoint/model.safetensors",
                _one_tensor("head.2.weight", lambda v: v * float("nan")),
            ),
            "NaN",
        ),
        (
            lambda out: _rewrite_tensors(
                out / "checkpoint/model.safetensors",
                _one_tensor("head.2.weight", lambda v: v.double()),
            ),
            "is torch.float64",
        ),
    ],
    ids=[
        "garbage-weights",
        "no-optimizer",
        "epoch-text",
        "no-scheduler",
        "meta-list",
        "computed-empty",
        "negative-index",
        "no-best-epoch",
        "optimizer-shape",
        "nan-weights",
        "float64-weights",
    ],
)
def test_a_damaged_checkpoint_is_refused_in_one_line(
    data: Path, tmp_path: Path, damage, needle: str
) -> None:
    """A checkpoint that would not restore whole is an HT2Error naming it, not a traceback
    from safetensors, the optimizer or the first training step."""
    config = _config(schedule="step", step_size=1, gamma=0.5, epochs=1)
    out = tmp_path / "run"
    _run(data, out, config)
    damage(out)
    with pytest.raises(HT2Error, match="resume") as error:
        _run(data, out, config.updated(epochs=2), resume=True)
    assert needle in str(error.value)


def test_a_weight_average_is_resumed_only_with_its_own_decay(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = _config(ema=0.9, epochs=1, schedule="step", step_size=1, gamma=0.5)
    _run(data, out, config)
    for other in (0.0, 0.99):
        with pytest.raises(HT2Error, match="ema 0.9; resume with the same one"):
            _run(data, out, config.updated(ema=other, epochs=2), resume=True)
    plain = tmp_path / "plain"
    _run(data, plain, config.updated(ema=0.0))
    with pytest.raises(HT2Error, match="kept no weight average; resume without ema"):
        _run(data, plain, config.updated(epochs=2), resume=True)
    (out / "checkpoint" / "average.safetensors").unlink()
    with pytest.raises(HT2Error, match=r"damaged \(average.safetensors is missing\)"):
        _run(data, out, config.updated(epochs=2), resume=True)
