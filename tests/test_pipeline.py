"""Recipes: which one runs by default, flags over it, every step in the report, bad input in
one line; `ht2 finetune`'s default teacher and its time budget."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import ht2
from ht2.cli.finetune import choose_teacher
from ht2.cli.flag_names import with_flags
from ht2.cli.main import build_parser, main
from ht2.errors import HT2Error
from ht2.recipes import RECIPES, compress_with_recipe, default_recipe, pipeline_lines
from ht2.recipes.budget import epochs_for
from ht2.surgery.targets import Target
from tests._shared import write_image_tree

WIDTH = 16
X = torch.zeros(1, 3, 8, 8)


class Small(nn.Module):
    """A stem, two 3x3 convs with BatchNorm and a classifier: enough layers to allocate."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, WIDTH, 3, padding=1)
        self.conv1 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTH)
        self.conv2 = nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(WIDTH)
        self.head = nn.Linear(WIDTH, 5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean((2, 3)))


def _batches(count: int = 48) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images = torch.randn(count, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return [(images[i : i + 16], torch.zeros(16, dtype=torch.long)) for i in range(0, count, 16)]


def _recipe(argv: list[str]):
    """The recipe `ht2 compress ARGV` would run (parsing only: no model is built)."""
    from ht2.cli.compress import recipe_from_args
    from ht2.cli.rank_args import rank_options

    args = build_parser().parse_args(["compress", "cifar10_resnet20", "--random-init", *argv])
    return recipe_from_args(args, rank_options(args)["target"] is not None)


def test_default_recipe_is_best_with_data_and_a_target_and_paper_otherwise() -> None:
    assert default_recipe(has_data=True, has_target=True) == "best"
    assert default_recipe(has_data=False, has_target=True) == "paper"
    assert default_recipe(has_data=True, has_target=False) == "paper"
    assert _recipe(["--target-params", "4", "--data", "DATA", "--out", "o"]).name == "best"
    assert _recipe(["--target-params", "4", "--out", "o"]).name == "paper"
    assert _recipe(["--energy", "0.8", "--data", "DATA", "--out", "o"]).name == "paper"


def test_best_recipe_runs_the_steps_that_measured_best() -> None:
    best = RECIPES["best"]
    assert (best.allocate, best.refine_sweeps, best.data_aware, best.bn_calibrate) == (
        "sensitivity",
        10,
        "refit",
        "auto",
    )
    paper = RECIPES["paper"]
    assert (paper.allocate, paper.refine_sweeps, paper.data_aware, paper.calibrate) == (
        "uniform",
        0,
        None,
        False,
    )


def test_explicit_flags_override_the_recipe_and_are_remembered() -> None:
    argv = ["--target-params", "4", "--data", "DATA", "--allocate", "spectrum"]
    argv += ["--refine-sweeps", "0", "--calib-images", "64", "--out", "o"]
    recipe = _recipe(argv)
    assert recipe.name == "best"
    assert (recipe.allocate, recipe.refine_sweeps, recipe.data_aware) == ("spectrum", 0, "refit")
    assert (recipe.sensitivity_images, recipe.data_aware_images) == (64, 64)
    assert {"allocate", "refine_sweeps", "data_aware_images"} <= set(recipe.overrides)
    assert "data_aware" not in recipe.overrides
    off = _recipe(["--target-params", "4", "--data", "DATA", "--data-aware", "off", "--out", "o"])
    assert off.data_aware is None and "data_aware" in off.overrides
    paper = _recipe(
        ["--target-params", "4", "--recipe", "paper", "--refine-sweeps", "3", "--out", "o"]
    )
    assert (paper.name, paper.allocate, paper.refine_sweeps) == ("paper", "uniform", 3)


def test_library_call_records_every_step_of_the_best_recipe() -> None:
    model = Small()
    recipe = RECIPES["best"].with_choices(candidates=(0.5, 0.8, 0.95)).with_images(48)
    report = compress_with_recipe(
        model, recipe, target=Target("params", 2), data=_batches(), example_input=X
    )
    pipeline = report.pipeline
    assert pipeline["recipe"] == "best"
    assert [step["step"] for step in pipeline["steps"]] == ["allocate", "factors", "batchnorm"]
    allocation, factors, batchnorm = pipeline["steps"]
    assert allocation["allocation"] == "sensitivity" and allocation["images"] == 48
    assert (factors["refine_sweeps"], factors["data_aware"]) == (10, "refit")
    assert factors["images"] + batchnorm["held_out"] == 48
    assert batchnorm["how"] == "auto" and isinstance(batchnorm["kept"], bool)
    assert report.target["allocation"] == "sensitivity" and report.refine_sweeps == 10
    assert report.data_aware["options"]["mode"] == "refit"
    line = pipeline_lines(pipeline)[0]
    assert line.startswith("recipe best (--calib-images 48, --candidates 0.5,0.8,0.95 given): ")
    assert "sensitivity allocation on 48 images -> " in line and "10 ALS sweeps" in line


def test_library_call_by_the_paper_recipe_reads_no_data() -> None:
    model = Small()
    report = compress_with_recipe(model, "paper", target=Target("params", 2), example_input=X)
    steps = report.pipeline["steps"]
    assert [step["step"] for step in steps] == ["allocate", "factors"]
    assert steps[0]["allocation"] == "uniform" and steps[0]["energy"] == report.target["energy"]
    assert steps[1]["refine_sweeps"] == 0 and report.data_aware is None
    assert pipeline_lines(report.pipeline)[0].endswith(
        "-> no training images; " + f"{report.pipeline['seconds']:.1f} s in all"
    )


def test_allocation_cache_measures_sensitivity_once_across_targets(monkeypatch) -> None:
    import ht2.surgery.allocate as allocate_module

    calls: list[int] = []
    measure = allocate_module.measure

    def counted(*args, **kwargs):
        calls.append(1)
        return measure(*args, **kwargs)

    monkeypatch.setattr(allocate_module, "measure", counted)
    original = Small()
    recipe = RECIPES["paper"].with_choices(
        allocate="sensitivity", candidates=(0.5, 0.8, 0.95), sensitivity_images=32
    )
    cache: dict = {}

    def run(factor: float, allocation_cache: dict | None):
        return compress_with_recipe(
            copy.deepcopy(original),
            recipe,
            target=Target("params", factor),
            data=_batches(),
            example_input=X,
            allocation_cache=allocation_cache,
        )

    first = run(2, cache)
    second = run(1.5, cache)
    assert len(calls) == 1 and len(cache) == 1
    assert second.target["damage"] == first.target["damage"]
    fresh = run(1.5, None)  # without the cache it measures again, to the same figures
    assert len(calls) == 2
    assert fresh.target["damage"] == second.target["damage"]
    assert [layer.ranks for layer in fresh.layers] == [layer.ranks for layer in second.layers]


def test_library_refuses_the_best_recipe_without_a_target_or_data() -> None:
    with pytest.raises(HT2Error, match="^recipe best .* give target_params or target_macs"):
        compress_with_recipe(Small(), "best", data=_batches(), example_input=X)
    with pytest.raises(HT2Error, match="^recipe best measures each layer .* give data=PATH"):
        compress_with_recipe(Small(), "best", target=Target("params", 2), example_input=X)
    with pytest.raises(HT2Error, match="unknown recipe 'fast'"):
        compress_with_recipe(Small(), "fast", example_input=X)


@pytest.mark.slow
def test_cli_best_recipe_writes_its_steps_and_report_shows_them(tmp_path: Path, cli) -> None:
    data = write_image_tree(tmp_path / "data", per_class=4)
    out = tmp_path / "o"
    argv = ["compress", "cifar10_resnet20", "--random-init", "--target-params", "2"]
    argv += ["--data", str(data), "--calib-images", "12", "--allocate", "spectrum"]
    argv += ["--refit", "last", "--out", str(out)]
    code, stdout, err = cli(argv)
    assert code == 0, err
    saved = json.loads((out / "report.json").read_text())
    pipeline = saved["pipeline"]
    assert pipeline["recipe"] == "best"
    assert pipeline["overrides"]["allocate"] == "spectrum"
    assert [step["step"] for step in pipeline["steps"]] == ["allocate", "factors", "batchnorm"]
    assert saved["refine_sweeps"] == 10 and saved["data_aware"]["images"] == 9
    line = stdout.strip().splitlines()[-1]
    assert line.startswith("recipe best (--allocate spectrum, --calib-images 12, --refit last ")
    assert "spectrum allocation -> ht2 factors refined by 10 ALS sweeps" in line
    assert "on 3 held-out images" in line
    assert "no recovery yet" not in err
    code, shown, _ = cli(["report", str(out)])
    assert code == 0 and shown.strip().splitlines()[-1] == line


def test_cli_without_data_runs_the_paper_recipe_and_says_so(tmp_path: Path, cli) -> None:
    out = tmp_path / "o"
    argv = ["compress", "cifar10_resnet20", "--random-init", "--target-params", "2"]
    code, stdout, err = cli([*argv, "--out", str(out)])
    assert code == 0, err
    assert "recipe paper: one energy for every layer (" in stdout
    assert "ht2 factors (one pass) -> no training images" in stdout
    assert json.loads((out / "report.json").read_text())["pipeline"]["overrides"] == {}
    assert "no recovery yet" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--recipe", "fastest"], "argument --recipe: invalid choice: 'fastest'"),
        (["--recipe", "best", "--data", "DATA"], "give --target-params or --target-macs"),
        (["--recipe", "best", "--target-params", "2"], "--recipe best measures each layer"),
        (
            ["--target-params", "2", "--data", "DATA"],
            "only 12 training images in DATA, fewer than these steps need: sensitivity "
            "allocation 256, data-aware refit 512 images",
        ),
        (
            [
                "--target-params",
                "2",
                "--data",
                "DATA",
                "--data-aware",
                "off",
                "--calib-images",
                "40",
            ],
            "only 12 training images in DATA, fewer than these steps need: sensitivity "
            "allocation 40 images",
        ),
        (["--target-params", "2", "--data", "DATA", "--calibrate"], "--recipe best fits"),
        (
            ["--recipe", "paper", "--data", "DATA", "--calibrate", "--calib-images", "40"],
            "only 12 training images in DATA, fewer than the 40 asked for calibration; lower "
            "--calib-images to 12 or fewer",
        ),
        (
            ["--target-params", "2", "--data", "DATA", "--rank-rule", "vbmf"],
            "--recipe best (--allocate sensitivity) chooses every layer's ranks",
        ),
        (["--refit", "last"], "only apply with --data-aware"),
    ],
)
def test_cli_bad_recipe_input_is_one_line(tmp_path: Path, cli, extra, message) -> None:
    data = write_image_tree(tmp_path / "data", per_class=4)
    extra = [str(data) if item == "DATA" else item for item in extra]
    message = message.replace("DATA", str(data))
    out = tmp_path / "o"
    code, _, err = cli(["compress", "cifar10_resnet20", "--random-init", *extra, "--out", str(out)])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists()


def _folder(tmp_path: Path, name: str, weights: str | None) -> Path:
    model = ht2.models.create("cifar10_resnet20", weights=weights)
    return ht2.save(model, tmp_path / name)


def test_finetune_distils_by_default_from_the_recorded_weights(tmp_path: Path) -> None:
    source = _folder(tmp_path, "pre", "pretrained")
    teacher, note = choose_teacher(source, None, None)
    assert teacher is not None and teacher.ht2_arch["weights"] == "pretrained" and note is None
    assert choose_teacher(source, False, None) == (None, None)


def test_finetune_without_known_weights_says_so_in_one_line(tmp_path: Path, cli) -> None:
    source = _folder(tmp_path, "rand", None)
    teacher, note = choose_teacher(source, None, None)
    assert teacher is None
    assert note.startswith("note: fine-tuning without distillation: ")
    assert "does not record the uncompressed model's weights" in note
    with pytest.raises(HT2Error, match="pass teacher_weights=FILE") as refused:
        choose_teacher(source, True, None)
    assert "pass --teacher-weights FILE" in with_flags(refused.value)
    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=2)
    argv = _finetune(source, data, tmp_path / "ft", "--epochs", "1", "--max-steps", "1")
    code, _, err = cli(argv)
    assert code == 0, err
    assert [line for line in err.splitlines() if "distillation" in line] == [note]
    saved = json.loads((tmp_path / "ft" / "checkpoint" / "state.json").read_text())
    assert saved["meta"]["config"]["distill"] is False


def test_finetune_by_default_distils_and_no_distill_turns_it_off(tmp_path: Path, cli) -> None:
    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=2)
    source = _folder(tmp_path, "pre", "pretrained")
    for flag, expected in (([], True), (["--no-distill"], False)):
        out = tmp_path / f"ft{len(flag)}"
        code, _, err = cli(_finetune(source, data, out, "--epochs", "1", "--max-steps", "1", *flag))
        assert code == 0, err
        assert "distillation" not in err
        saved = json.loads((out / "checkpoint" / "state.json").read_text())
        assert saved["meta"]["config"]["distill"] is expected


def test_epochs_for_a_budget_count_whole_epochs_after_the_first_evaluation() -> None:
    assert epochs_for(10, epoch_seconds=120, eval_seconds=30) == 4  # 600 s - 30 s = 4.75 epochs
    assert epochs_for(1, epoch_seconds=120, eval_seconds=30) == 0


def _finetune(source: Path, data: Path, out: Path, *extra: str) -> list[str]:
    argv = ["finetune", str(source), "--data", str(data), "--batch-size", "8", "--workers", "0"]
    return [*argv, "--calib-images", "8", "--eval-limit", "8", "--out", str(out), *extra]


def _steady_clock(monkeypatch, step_seconds: float, batch_seconds: float) -> None:
    """Training steps and evaluation batches that take exactly these times."""
    import ht2.recipes.budget as budget

    monkeypatch.setattr(budget, "_time_training", lambda *args: (step_seconds, 5))
    monkeypatch.setattr(budget, "_time_evaluation", lambda *args: batch_seconds)


def test_budget_timing_measures_real_steps(tmp_path: Path) -> None:
    from ht2.recipes.budget import epochs_within
    from ht2.train import TrainConfig

    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=2)
    model = ht2.models.create("cifar10_resnet20")
    config = TrainConfig(batch_size=8, workers=0, eval_limit=8, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    entry = ht2.models.get_entry("cifar10_resnet20")
    budget = epochs_within(model, entry, str(data), config, minutes=600, teacher=model)
    assert budget.steps_per_epoch == 2 and budget.timed_steps == 1  # 20 images, batches of 8
    assert budget.seconds_per_step > 0 and budget.eval_seconds > 0
    assert budget.epochs == epochs_for(600, budget.epoch_seconds, budget.eval_seconds) >= 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("in_memory", [True, False])
def test_budget_steps_are_computed_as_the_run_computes_them(
    tmp_path: Path, monkeypatch, in_memory: bool
) -> None:
    """The probe reads the run's inputs (in memory or the files) and steps in its precision and
    memory format, so that --budget-minutes times what training will do."""
    import ht2.recipes.budget as budget
    from ht2.train import TrainConfig
    from ht2.train.batches import MemoryBatches

    seen = []
    real = budget.step_loss

    def recording(model, images, labels, settings):
        channels_last = images.is_contiguous(memory_format=torch.channels_last)
        seen.append((settings.amp, settings.channels_last, channels_last))
        return real(model, images, labels, settings)

    built = []
    real_inputs = budget.build_inputs
    monkeypatch.setattr(budget, "step_loss", recording)
    monkeypatch.setattr(
        budget, "build_inputs", lambda *args: built.append(real_inputs(*args)) or built[-1]
    )
    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=2)
    config = TrainConfig(
        batch_size=8,
        workers=0,
        eval_limit=8,
        device="cpu",
        amp="none",
        channels_last=True,
        in_memory=in_memory,
    )
    entry = ht2.models.get_entry("cifar10_resnet20")
    budget.epochs_within(ht2.models.create("cifar10_resnet20"), entry, str(data), config, 600)
    assert seen and all(step == ("none", True, True) for step in seen)
    assert isinstance(built[0].train, MemoryBatches) == in_memory


def test_finetune_budget_picks_the_epochs_and_prints_them(tmp_path: Path, cli, monkeypatch) -> None:
    _steady_clock(monkeypatch, step_seconds=0.5, batch_seconds=0.1)
    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=2)
    source = _folder(tmp_path, "rand", None)
    out = tmp_path / "ft"
    code, _, err = cli(_finetune(source, data, out, "--budget-minutes", "0.05"))
    assert code == 0, err
    # 2 steps of 0.5 s and 1 evaluation batch of 0.1 s an epoch; 3 s less the first evaluation
    chosen = next(line for line in err.splitlines() if line.startswith("--budget-minutes 0.05: "))
    assert "one epoch takes about 1.1 s here (2 steps of batch 8 at 0.500 s" in chosen
    assert chosen.endswith("training 2 epochs (--epochs 2)")
    logged = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged == [0, 1, 2]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--budget-minutes", "0.05"],
            "--budget-minutes 0.05 is too short for one epoch: one epoch takes about 20.1 s "
            "here (2 steps of batch 8 at 10.000 s, timed on 5, and 0.1 s of evaluation), so one "
            "epoch and the evaluation before it need about 0.4 minutes; give --budget-minutes "
            "0.4 or more, or --epochs",
        ),
        (["--budget-minutes", "5", "--epochs", "2"], "give --epochs or --budget-minutes"),
        (["--budget-minutes", "5", "--resume"], "drop --budget-minutes"),
        (["--budget-minutes", "0"], "argument --budget-minutes: expected a finite number > 0"),
    ],
)
def test_finetune_bad_budget_is_one_line(tmp_path: Path, cli, monkeypatch, extra, message):
    _steady_clock(monkeypatch, step_seconds=10.0, batch_seconds=0.1)
    data = write_image_tree(tmp_path / "data", classes=tuple("abcdefghij"), per_class=2)
    source = _folder(tmp_path, "rand", None)
    out = tmp_path / "ft"
    code, _, err = cli(_finetune(source, data, out, "--no-distill", *extra))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists()


def test_a_missing_data_folder_is_refused_before_any_compression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import ht2.recipes.pipeline as pipeline

    def never(*args, **kwargs):
        raise AssertionError("compressed before checking --data")

    monkeypatch.setattr(pipeline, "make_plan", never)
    monkeypatch.setattr(pipeline, "_allocate", never)
    argv = ["compress", "cifar10_resnet20", "--random-init", "--out", str(tmp_path / "o")]
    for extra in (["--energy", "0.8", "--calibrate"], ["--target-params", "2"]):
        assert main([*argv, *extra, "--data", str(tmp_path / "missing")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "does not exist" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("ht2", "ht2 factors refined by 10 ALS sweeps ->"),
        ("tucker2", "tucker2 factors refined by 10 ALS sweeps ->"),
        ("cp", "cp factors ->"),  # sweeps do not touch CP: the line must not claim them
    ],
)
def test_recipe_line_claims_sweeps_only_for_methods_they_refine(method, expected) -> None:
    steps = [
        {"step": "allocate", "allocation": "spectrum"},
        {"step": "factors", "method": method, "refine_sweeps": 10},
        {"step": "batchnorm", "how": "off"},
    ]
    line = pipeline_lines({"recipe": "best", "steps": steps})[0]
    assert expected in line, line
