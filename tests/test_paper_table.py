"""benchmarks/paper_table.py's bookkeeping: rows written one by one, done rows skipped, a stopped
fine-tune resumed, deltas against the base row, the Markdown from the JSON alone, stable keys."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from tests._shared import load_benchmark, write_image_tree

TEN_CLASSES = tuple("abcdefghij")


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh copy of the script, as when it is run."""
    return load_benchmark("paper_table", monkeypatch)


class FakeStages:
    """Stand-ins for compress, evaluate and fine-tune: instant, with set accuracies, and a log
    of the calls (each also notes how many rows the results file held at that moment)."""

    def __init__(self, table: ModuleType, results: Path, after: dict[str, float]) -> None:
        self.table, self.results, self.after = table, results, after
        self.calls: list[tuple[str, str, int]] = []

    def _note(self, stage: str, key: str) -> None:
        self.calls.append((stage, key, len(self.table.read_results(self.results))))

    def compress(self, row, settings, out: Path) -> dict[str, float]:
        self._note("compress", row.key)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ht2.json").write_text("{}")
        return {"params_x": row.target * 1.01, "macs_x": row.target * 0.99}

    def evaluate(self, folder: Path, settings) -> float:
        self._note("evaluate", str(folder))
        return 10.0

    def finetune(self, row, settings, source: Path, out: Path, resume: bool) -> None:
        self._note("finetune", row.key)
        (out / "checkpoint").mkdir(parents=True, exist_ok=True)
        lines = [{"epoch": e, "top1": self.after[row.pipeline] - row.epochs + e} for e in range(3)]
        (out / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        meta = {"meta": {"epoch": row.epochs}}
        (out / "checkpoint" / "state.json").write_text(json.dumps(meta))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeStages:
        monkeypatch.setattr(self.table, "compress_row", self.compress)
        monkeypatch.setattr(self.table, "evaluate_row", self.evaluate)
        monkeypatch.setattr(self.table, "finetune_row", self.finetune)
        return self


def _argv(tmp_path: Path, rows: str, *extra: str) -> list[str]:
    """The runner's arguments for the ResNet-20 rows matching `rows` (globs after the net)."""
    rows = ",".join(f"cifar10_resnet20/{glob}" for glob in rows.split(","))
    argv = ["--data", str(tmp_path / "data"), "--epochs", "2", "--rows", rows]
    return [
        *argv,
        "--results",
        str(tmp_path / "out.json"),
        "--work",
        str(tmp_path / "work"),
        *extra,
    ]


def test_row_keys_are_stable(table: ModuleType) -> None:
    keys = [row.key for row in table.plan_rows(["cifar10_resnet20"], 10)]
    assert keys == [
        "cifar10_resnet20/base/dense/1x/e10",
        "cifar10_resnet20/paper/ht2/1.5x/e10",
        "cifar10_resnet20/best/ht2/1.5x/e10",
        "cifar10_resnet20/paper/ht2/2.5x/e10",
        "cifar10_resnet20/best/ht2/2.5x/e10",
        "cifar10_resnet20/paper/ht2/3.8x/e10",
        "cifar10_resnet20/best/ht2/3.8x/e10",
        "cifar10_resnet20/paper/ht2/5.6x/e10",
        "cifar10_resnet20/best/ht2/5.6x/e10",
        "cifar10_resnet20/paper/ht2/8.4x/e10",
        "cifar10_resnet20/best/ht2/8.4x/e10",
        "cifar10_resnet20/best/tucker2/2.5x/e10",
        "cifar10_resnet20/best/cp/2.5x/e10",
        "cifar10_resnet20/best/tucker2/3.8x/e10",
        "cifar10_resnet20/best/cp/3.8x/e10",
        "cifar10_resnet20/best/cp/5.6x/e10",
        "cifar10_resnet20/best/cp/8.4x/e10",
        *[f"cifar10_resnet20/prune/channels/{x}x/e10" for x in ("1.5", "2.5", "3.8", "5.6", "8.4")],
    ]
    sizes = [row.target for row in table.plan_rows(["cifar10_resnet56"], 10) if row.method == "ht2"]
    assert sorted(set(sizes)) == [1.5, 2.55, 4.0, 6.05, 9.05]
    rivals = [(r.method, r.target) for r in table.plan_rows(["cifar10_resnet56"], 10)]
    assert sorted(x for method, x in rivals if method == "cp") == [2.55, 4.0]


def test_rows_are_written_one_by_one_and_a_second_run_skips_them(
    table: ModuleType, tmp_path: Path, monkeypatch, capsys
) -> None:
    results = tmp_path / "out.json"
    fake = FakeStages(table, results, {"base": 80.0, "paper": 70.0, "best": 75.0, "prune": 72.0})
    fake.install(monkeypatch)
    assert table.main(_argv(tmp_path, "base/*,*/1.5x/*")) == 0
    compressions = [(key, held) for stage, key, held in fake.calls if stage == "compress"]
    assert compressions == [
        ("cifar10_resnet20/base/dense/1x/e2", 0),
        ("cifar10_resnet20/paper/ht2/1.5x/e2", 1),
        ("cifar10_resnet20/best/ht2/1.5x/e2", 2),
        ("cifar10_resnet20/prune/channels/1.5x/e2", 3),
    ]
    rows = table.read_results(results)
    assert [row["key"] for row in rows] == [key for key, _ in compressions]
    needed = {"net", "pipeline", "method", "params_x", "macs_x", "top1_before", "top1_after"}
    needed |= {"epochs", "delta", "minutes", "target", "settings"}
    assert all(needed <= set(row) for row in rows)
    assert rows[1]["settings"]["epochs"] == 2 and rows[1]["settings"]["data"].endswith("data")
    assert rows[1]["top1_after"] == 70.0 and rows[1]["top1_before"] == 10.0
    assert rows[2]["compress_command"].startswith("ht2 compress cifar10_resnet20 --pretrained")
    assert "--recipe best --method ht2 --target-params 1.5 --data" in rows[2]["compress_command"]
    assert rows[3]["compress_command"].startswith(
        "ht2 prune cifar10_resnet20 --pretrained --target-params 1.5 --out"
    )
    capsys.readouterr()

    fake.calls.clear()
    assert table.main(_argv(tmp_path, "base/*,*/1.5x/*")) == 0
    assert fake.calls == []
    assert capsys.readouterr().out.count("done, skipped") == 4
    assert table.read_results(results) == rows


def test_a_row_another_live_run_holds_is_skipped_and_a_dead_ones_is_taken(
    table: ModuleType, tmp_path: Path, monkeypatch, capsys
) -> None:
    import subprocess
    import sys

    results = tmp_path / "out.json"
    fake = FakeStages(table, results, {"base": 80.0, "paper": 70.0}).install(monkeypatch)
    work = tmp_path / "work"
    base, paper = "cifar10_resnet20-base-dense-1x-e2", "cifar10_resnet20-paper-ht2-1.5x-e2"
    for slug in (base, paper):
        (work / slug).mkdir(parents=True)
    live = os.getppid()
    (work / base / ".running").write_text(str(live))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (work / paper / ".running").write_text(str(dead.pid))
    assert table.main(_argv(tmp_path, "base/*,paper/ht2/1.5x/*")) == 0
    out = capsys.readouterr().out
    assert f"cifar10_resnet20/base/dense/1x/e2: being run by process {live}, skipped" in out
    assert [key for stage, key, _ in fake.calls if stage == "compress"] == [
        "cifar10_resnet20/paper/ht2/1.5x/e2"
    ]
    assert [row["key"] for row in table.read_results(results)] == [
        "cifar10_resnet20/paper/ht2/1.5x/e2"
    ]
    assert (work / base / ".running").read_text() == str(live)  # left to its holder
    assert not (work / paper / ".running").exists()  # released when the row finished


def test_minutes_count_every_logged_epoch_even_of_a_killed_run(table: ModuleType) -> None:
    log = [{"epoch": 0, "top1": 10.0}, {"epoch": 1, "seconds": 100.0}, {"epoch": 2, "seconds": 200}]
    assert table.row_minutes({"stage_seconds": 60.0}, log) == 6.0
    assert table.row_minutes({}, log) == 5.0
    # row.json written before stage_seconds: one sum that a kill may have cut short
    assert table.row_minutes({"seconds": 120.0}, log) == 5.0
    assert table.row_minutes({"seconds": 420.0, "stage_seconds": 60.0}, log) == 8.0


def test_delta_is_against_the_base_row_and_filled_when_it_arrives(
    table: ModuleType, tmp_path: Path, monkeypatch
) -> None:
    results = tmp_path / "out.json"
    FakeStages(table, results, {"base": 80.0, "paper": 70.5, "best": 75.0}).install(monkeypatch)
    assert table.main(_argv(tmp_path, "paper/ht2/2.5x/*")) == 0
    assert [row["delta"] for row in table.read_results(results)] == [None]
    assert table.main(_argv(tmp_path, "base/*")) == 0
    deltas = {row["pipeline"]: row["delta"] for row in table.read_results(results)}
    assert deltas == {"paper": -9.5, "base": 0.0}
    assert "| paper | ht2 | 2.5x | 2.52x | 2.48x | 10.00 | 70.50 | -9.50 |" in (
        results.with_suffix(".md").read_text()
    )


def test_table_is_generated_from_the_json_alone(
    table: ModuleType, tmp_path: Path, monkeypatch
) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("--table must not run anything")

    for stage in ("compress_row", "evaluate_row", "finetune_row", "run_row"):
        monkeypatch.setattr(table, stage, refuse)
    results = tmp_path / "out.json"
    row = {"net": "cifar10_resnet20", "method": "ht2", "target": 3.8, "epochs": 10}
    row |= {"pipeline": "best", "params_x": 3.81, "macs_x": 3.5, "top1_before": 61.234}
    row |= {"top1_after": 84.5, "delta": 0.0, "minutes": 42.0, "key": "k"}  # a stale delta
    base = row | {"pipeline": "base", "method": "dense", "target": 1.0, "key": "b"}
    base |= {"params_x": 1.0, "macs_x": 1.0, "top1_after": 86.75}
    results.write_text(json.dumps({"rows": [row, base]}))
    assert table.main(["--table", "--results", str(results)]) == 0
    assert [r["delta"] for r in table.read_results(results)] == [-2.25, 0.0]
    text = results.with_suffix(".md").read_text()
    assert "## cifar10_resnet20, 10 epochs of fine-tuning" in text
    assert "| best | ht2 | 3.8x | 3.81x | 3.50x | 61.23 | 84.50 | -2.25 | 42.0 |" in text
    assert "Prune: `ht2 prune` (channel pruning)" in text


def _kill_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Stop the fine-tune in its `epoch`-th epoch, as Ctrl-C would."""
    import ht2.train.runner as runner

    real, calls = runner.train_one_epoch, {"n": 0}

    def stopping(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train_one_epoch", stopping)


def test_a_stopped_fine_tune_resumes_from_its_checkpoint(
    table: ModuleType, tmp_path: Path, monkeypatch, capsys
) -> None:
    """A real tiny run: the bundled ResNet-20 at 1.5x, two epochs of two steps."""
    monkeypatch.setenv("HT2_CACHE_DIR", str(tmp_path / "cache"))
    write_image_tree(tmp_path / "data", classes=TEN_CLASSES, per_class=2)
    argv = _argv(tmp_path, "paper/ht2/1.5x/*", "--batch-size", "8", "--workers", "0")
    argv += ["--eval-limit", "10"]
    results = tmp_path / "out.json"
    with monkeypatch.context() as patch:
        _kill_in_epoch(patch, epoch=2)
        assert table.main(argv) == 130
    assert not results.exists()
    key = "cifar10_resnet20/paper/ht2/1.5x/e2/b8"  # a batch of its own
    assert table.main([*argv, "--dry-run"]) == 0
    assert f"{key:45s} fine-tuned 1/2 epochs" in capsys.readouterr().out

    counts = {"compress_row": 0, "evaluate_row": 0}
    for name in counts:
        real = getattr(table, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(table, name, counted)
    assert table.main(argv) == 0
    assert counts == {"compress_row": 0, "evaluate_row": 0}
    assert f"{key}: resuming its fine-tune after epoch 1" in capsys.readouterr().err
    (row,) = table.read_results(results)
    assert row["key"] == key and list(row["top1_by_epoch"]) == ["0", "1", "2"]
    assert row["top1_after"] == row["top1_by_epoch"]["2"] and row["minutes"] > 0
    assert 1.45 <= row["params_x"] <= 1.55


def test_rows_record_no_absolute_paths(table: ModuleType, tmp_path: Path) -> None:
    root = Path(table.portable.__globals__["ROOT"])  # the repository paths.py writes against
    shared = root.parent / "beside-the-repo" / "cifar.tar.gz"  # as ../shared is
    settings = table.Settings(data=str(shared), weights={"n": str(Path.home() / "w.th")})
    recorded = settings.to_dict()
    assert recorded["data"] == "../beside-the-repo/cifar.tar.gz"
    assert recorded["weights"] == {"n": "~/w.th"}
    assert (
        table._command(["finetune", str(shared)]) == "ht2 finetune ../beside-the-repo/cifar.tar.gz"
    )


def test_speed_rows_are_asked_for_and_compress_for_a_speedup(
    table: ModuleType, tmp_path: Path, monkeypatch, capsys
) -> None:
    keys = [row.key for row in table.plan_rows(["cifar10_resnet20"], 10, (1.3,))]
    assert keys[-1] == "cifar10_resnet20/speed/ht2/1.3x/e10"
    assert not any("/speed/" in row.key for row in table.plan_rows(["cifar10_resnet20"], 10))
    speed = table.Row("cifar10_resnet20", "speed", "ht2", 1.3, 10)
    settings = table.Settings(data="d", speed_for="eager,float32,16")
    argv = table.compress_args(speed, settings, tmp_path / "out")
    assert " ".join(argv).startswith(
        "compress cifar10_resnet20 --pretrained --recipe paper --method ht2 --target-speedup 1.3 "
        "--runtime eager --dtype float32 --batch-size 16 --out"
    )
    results = tmp_path / "out.json"
    FakeStages(table, results, {"base": 80.0, "speed": 77.0}).install(monkeypatch)
    argv = _argv(tmp_path, "base/*,speed/*", "--speed", "1.3")
    assert table.main(argv) == 0
    rows = {row["pipeline"]: row for row in table.read_results(results)}
    assert rows["speed"]["delta"] == -3.0 and rows["speed"]["speed_for"] == "openvino,bfloat16,128"
    text = results.with_suffix(".md").read_text()
    assert text.index("| base |") < text.index("| speed | ht2 | 1.3x faster |")
    for bad in (["--speed", "1.3,0.9"], ["--speed", "fast"], ["--speed-for", "openvino,bf16,8"]):
        with pytest.raises(SystemExit):
            table.main(_argv(tmp_path, "*", *bad))
        assert "error: argument --speed" in capsys.readouterr().err


def test_a_learning_rate_of_its_own_makes_a_table_with_its_own_base(
    table: ModuleType, tmp_path: Path, monkeypatch, capsys
) -> None:
    keys = [row.key for row in table.plan_rows(["cifar10_resnet20"], 10, lr=0.003)]
    assert keys[0] == "cifar10_resnet20/base/dense/1x/e10/lr0.003"
    assert all(key.endswith("/e10/lr0.003") for key in keys)
    settings = table.Settings(data="d", lr=0.003)
    argv = table.finetune_args(settings, tmp_path / "in", tmp_path / "out", False)
    assert argv[argv.index("--lr") + 1] == "0.003"
    assert "--lr" not in table.finetune_args(table.Settings(data="d"), tmp_path, tmp_path, False)

    results = tmp_path / "out.json"
    fake = FakeStages(table, results, {"base": 80.0, "best": 75.0})
    fake.install(monkeypatch)
    assert table.main(_argv(tmp_path, "base/*,best/ht2/3.8x/*")) == 0
    fake.after = {"base": 81.0, "best": 79.5}
    assert table.main(_argv(tmp_path, "base/*,best/ht2/3.8x/*", "--lr", "0.003")) == 0
    deltas = {row["key"]: row["delta"] for row in table.read_results(results)}
    assert deltas == {
        "cifar10_resnet20/base/dense/1x/e2": 0.0,
        "cifar10_resnet20/best/ht2/3.8x/e2": -5.0,
        "cifar10_resnet20/base/dense/1x/e2/lr0.003": 0.0,
        "cifar10_resnet20/best/ht2/3.8x/e2/lr0.003": -1.5,
    }
    text = results.with_suffix(".md").read_text()
    plain = text.index("## cifar10_resnet20, 2 epochs of fine-tuning\n")
    assert plain < text.index(
        "## cifar10_resnet20, 2 epochs of fine-tuning, peak learning rate 0.003"
    )
    for bad in ("0", "-1", "fast", "inf"):
        with pytest.raises(SystemExit):
            table.main(_argv(tmp_path, "*", "--lr", bad))
        assert f"error: argument --lr: expected a finite number > 0, got {bad}" in (
            capsys.readouterr().err
        )


def test_a_weight_average_makes_a_table_with_its_own_base(
    table: ModuleType, tmp_path: Path, monkeypatch, capsys
) -> None:
    keys = [row.key for row in table.plan_rows(["cifar10_resnet20"], 10, ema=0.999)]
    assert keys[0] == "cifar10_resnet20/base/dense/1x/e10/ema0.999"
    argv = table.finetune_args(table.Settings(data="d", ema=0.999), tmp_path, tmp_path, False)
    assert argv[argv.index("--ema") + 1] == "0.999"
    assert "--ema" not in table.finetune_args(table.Settings(data="d"), tmp_path, tmp_path, False)

    results = tmp_path / "out.json"
    fake = FakeStages(table, results, {"base": 80.0, "best": 75.0})
    fake.install(monkeypatch)
    assert table.main(_argv(tmp_path, "base/*,best/ht2/3.8x/*")) == 0
    fake.after = {"base": 80.5, "best": 80.0}
    assert table.main(_argv(tmp_path, "base/*,best/ht2/3.8x/*", "--ema", "0.999")) == 0
    rows = {row["key"]: row for row in table.read_results(results)}
    assert rows["cifar10_resnet20/best/ht2/3.8x/e2/ema0.999"]["delta"] == -0.5
    assert rows["cifar10_resnet20/best/ht2/3.8x/e2/ema0.999"]["ema"] == 0.999
    assert "ema" not in rows["cifar10_resnet20/best/ht2/3.8x/e2"]
    text = results.with_suffix(".md").read_text()
    plain = text.index("## cifar10_resnet20, 2 epochs of fine-tuning\n")
    assert plain < text.index("2 epochs of fine-tuning, weight average kept (ema 0.999)")
    for bad in ("0", "1", "nan"):
        with pytest.raises(SystemExit):
            table.main(_argv(tmp_path, "*", "--ema", bad))
        assert "error: argument --ema: expected a finite number in (0, 1)" in (
            capsys.readouterr().err
        )


def test_a_batch_size_of_its_own_makes_a_table_with_its_own_base(
    table: ModuleType, tmp_path: Path, monkeypatch, capsys
) -> None:
    keys = [row.key for row in table.plan_rows(["cifar10_resnet20"], 10, lr=0.003, batch=32)]
    assert keys[0] == "cifar10_resnet20/base/dense/1x/e10/lr0.003/b32"
    argv = table.finetune_args(table.Settings(data="d", batch_size=32), tmp_path, tmp_path, False)
    assert argv[argv.index("--batch-size") + 1] == "32"

    results = tmp_path / "out.json"
    fake = FakeStages(table, results, {"base": 80.0, "best": 75.0})
    fake.install(monkeypatch)
    assert table.main(_argv(tmp_path, "base/*,best/ht2/3.8x/*", "--batch-size", "128")) == 0
    fake.after = {"base": 81.0, "best": 80.5}
    assert table.main(_argv(tmp_path, "base/*,best/ht2/3.8x/*", "--batch-size", "32")) == 0
    rows = {row["key"]: row for row in table.read_results(results)}
    assert {key: row["delta"] for key, row in rows.items()} == {
        "cifar10_resnet20/base/dense/1x/e2": 0.0,
        "cifar10_resnet20/best/ht2/3.8x/e2": -5.0,
        "cifar10_resnet20/base/dense/1x/e2/b32": 0.0,
        "cifar10_resnet20/best/ht2/3.8x/e2/b32": -0.5,
    }
    assert rows["cifar10_resnet20/best/ht2/3.8x/e2/b32"]["batch_size"] == 32
    assert "batch_size" not in rows["cifar10_resnet20/best/ht2/3.8x/e2"]
    text = results.with_suffix(".md").read_text()
    plain = text.index("## cifar10_resnet20, 2 epochs of fine-tuning\n")
    assert plain < text.index("## cifar10_resnet20, 2 epochs of fine-tuning, batch 32 (not 128)")
    for bad in ("0", "-4", "many"):
        with pytest.raises(SystemExit):
            table.main(_argv(tmp_path, "*", "--batch-size", bad))
        assert f"error: argument --batch-size: expected a batch size of 1 or more, got {bad}" in (
            capsys.readouterr().err
        )
