"""Output folders: --force replaces only ht2's, two writers never both win, signals and crashes
leave no staging folder for good, and modes follow the umask."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

import ht2
import ht2.io.atomic as atomic
from ht2.cli.main import main
from ht2.errors import HT2Error
from ht2.io import atomic_directory, check_output_dir
from ht2.io.artefacts import save_into


@pytest.fixture(params=["renameat2", "lock"])
def rename_by(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with Linux's renameat2 and again with the locked fallback of other systems."""
    if request.param == "renameat2" and atomic._libc_renameat2() is None:
        pytest.skip("no renameat2 on this system")
    if request.param == "lock":
        monkeypatch.setattr(atomic, "_libc_renameat2", lambda: None)
    return request.param


def _save(folder: Path, overwrite: bool = False) -> Path:
    return ht2.save(nn.Linear(2, 2), folder, overwrite=overwrite)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --force replaces only what ht2 wrote


def test_force_replaces_a_model_folder_and_leaves_nothing_beside_it(
    tmp_path: Path, rename_by: str
) -> None:
    out = _save(tmp_path / "m")
    (out / "extra.txt").write_text("from the old run")
    _save(out, overwrite=True)
    assert not (out / "extra.txt").exists() and (out / "ht2.json").is_file()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "files",
    [
        {"log.jsonl": '{"epoch": 1, "top1": 50.0}\n'},
        {"checkpoint/state.json": '{"meta": {"epoch": 1}}'},
        {},
    ],
    ids=["training-log", "training-checkpoint", "empty"],
)
def test_force_accepts_a_training_run_or_an_empty_folder(tmp_path: Path, files: dict) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    _save(out, overwrite=True)
    assert (out / "ht2.json").is_file() and not (out / "log.jsonl").exists()


@pytest.mark.parametrize(
    "files",
    [
        {"notes.txt": "mine"},
        {"log.jsonl": "not json\n"},
        {"state.json": "[]"},
        {"ht2.json": "", "thesis.tex": "mine"},
        {"log.jsonl": '{"epoch": 3}\n', "data.csv": "mine"},
        {"state.json": '{"meta": 1}', "precious.txt": "mine"},
    ],
    ids=["any-file", "foreign-log", "foreign-state", "empty-manifest", "epoch-log", "meta-1"],
)
def test_force_refuses_a_folder_ht2_did_not_write(tmp_path: Path, files: dict) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    with pytest.raises(HT2Error, match="was not written by ht2"):
        _save(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert _leftovers(tmp_path) == []


def test_without_force_a_non_empty_folder_is_refused_and_an_empty_one_filled(
    tmp_path: Path, rename_by: str
) -> None:
    out = _save(tmp_path / "m")
    with pytest.raises(HT2Error, match="exists and is not empty; use overwrite=True"):
        _save(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    _save(empty)
    assert (empty / "ht2.json").is_file() and _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("out", "cwd", "message"),
    [
        (".", "work", "it is the current folder"),
        ("..", "work", "it holds the current folder"),
        ("{tmp}/work", "work/deep", "it holds the current folder"),
        ("/", "work", "it is the root folder"),
        ("{tmp}/home", "work", "it is the home folder"),
    ],
)
def test_force_refuses_the_current_folder_its_parents_root_and_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str, cwd: str, message: str
) -> None:
    (tmp_path / "work" / "deep").mkdir(parents=True)
    (tmp_path / "work" / "ht2.json").write_text("{}")  # even a folder that looks like ours
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / cwd)
    target = out.format(tmp=tmp_path)
    with pytest.raises(HT2Error, match=message):
        check_output_dir(Path(target), overwrite=True)
    with pytest.raises(HT2Error, match=message):
        _save(Path(target), overwrite=True)
    assert _leftovers(tmp_path) == [] and (tmp_path / "work" / "ht2.json").is_file()


def test_cli_force_out_dot_is_one_line_and_leaves_the_parent_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    argv = ["compress", "cifar10_resnet20", "--random-init", "--energy", "0.5", "--force"]
    assert main([*argv, "--out", "."]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ht2: error: refusing to replace .")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]


def test_an_output_under_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(HT2Error, match="taken is not a folder"):
        check_output_dir(tmp_path / "taken" / "sub", overwrite=False)


# two writers at once


def _write_when_both_staged(out: str, overwrite: bool, barrier, results) -> None:
    name = f"writer-{os.getpid()}"
    try:
        with atomic_directory(Path(out), overwrite=overwrite) as staging:
            (staging / "ht2.json").write_text(name)
            barrier.wait(timeout=60)  # both have staged: now both rename
        results.put((name, "ok"))
    except HT2Error as error:
        results.put((name, str(error)))


def _race(out: Path, overwrite: bool) -> tuple[list[str], list[str], str]:
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    writers = [
        context.Process(
            target=_write_when_both_staged, args=(str(out), overwrite, barrier, results)
        )
        for _ in range(2)
    ]
    for writer in writers:
        writer.start()
    outcome = dict(results.get(timeout=120) for _ in writers)
    for writer in writers:
        writer.join(timeout=60)
    winners = [name for name, said in outcome.items() if said == "ok"]
    losers = [said for said in outcome.values() if said != "ok"]
    return winners, losers, (out / "ht2.json").read_text()


def test_of_two_writers_of_a_new_folder_exactly_one_wins(tmp_path: Path, rename_by: str) -> None:
    out = tmp_path / "out"
    winners, losers, written = _race(out, overwrite=False)
    assert len(winners) == 1 and written == winners[0]
    assert len(losers) == 1 and "exists" in losers[0] and "use overwrite=True" in losers[0]
    assert _leftovers(tmp_path) == []


def test_of_two_forced_writers_exactly_one_replaces_the_old_folder(
    tmp_path: Path, rename_by: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "ht2.json").write_text('{"format": "ht2"}')
    (out / "old-only.txt").write_text("old")
    winners, losers, written = _race(out, overwrite=True)
    assert len(winners) == 1 and written == winners[0]
    assert len(losers) == 1 and "written by another process" in losers[0]
    assert sorted(p.name for p in out.iterdir()) == ["ht2.json"]
    assert _leftovers(tmp_path) == []


def test_a_folder_made_while_staging_is_not_replaced(tmp_path: Path, rename_by: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(HT2Error, match="exists .*use overwrite=True"):
        with atomic_directory(out) as staging:
            (staging / "ht2.json").write_text("mine")
            out.mkdir()  # another program made it meanwhile, empty
    assert list(out.iterdir()) == [] and _leftovers(tmp_path) == []


# signals, crashes and stale staging folders

WRITER = """
import sys, time
import signal
signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a command started from a terminal: a test run
signal.signal(signal.SIGINT, signal.default_int_handler)  # under nohup or `&` inherits both ignored
from pathlib import Path
from ht2.cli.signals import install_interrupt_handlers
from ht2.io import atomic_directory

install_interrupt_handlers()
with atomic_directory(Path(sys.argv[1])) as staging:
    (staging / "model.safetensors").write_bytes(b"x" * 1000)
    print(staging, flush=True)
    time.sleep(60)
"""


def _start_writer(out: Path) -> tuple[subprocess.Popen, Path]:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True
    )
    staging = Path(writer.stdout.readline().strip())
    assert staging.is_dir() and staging.parent == out.parent
    return writer, staging


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_terminated_write_removes_its_staging_folder(tmp_path: Path, signame: str) -> None:
    writer, staging = _start_writer(tmp_path / "out")
    writer.send_signal(getattr(signal, signame))
    assert writer.wait(timeout=60) != 0
    assert not staging.exists() and not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


def test_the_staging_folder_of_a_killed_writer_goes_at_the_next_write(tmp_path: Path) -> None:
    writer, staging = _start_writer(tmp_path / "out")
    writer.kill()  # SIGKILL: nothing can clean up
    writer.wait(timeout=60)
    assert staging.is_dir()
    _save(tmp_path / "other")  # another output: not its business
    assert staging.is_dir()
    _save(tmp_path / "out")
    assert not staging.exists() and _leftovers(tmp_path) == []


def test_only_dead_writers_staging_of_this_host_and_this_name_is_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    host, gone, alive = atomic._host_tag(), int(dead.stdout), os.getpid()
    other_host = "000000" if host != "000000" else "111111"
    names = {
        f".out.{host}.{gone}.0123abcd.tmp": False,
        f".out.{host}.{alive}.0123abcd.tmp": True,
        f".out.{other_host}.{gone}.0123abcd.tmp": True,
        f".other.{host}.{gone}.0123abcd.tmp": True,
        f".out.{gone}.tmp": True,
        ".out.x7k2m9q1.tmp": True,  # what older ht2 (mkdtemp) named them: not ours to judge
    }
    for name in names:
        (tmp_path / name).mkdir()
    _save(tmp_path / "out")
    assert {name: (tmp_path / name).exists() for name in names} == names


def test_save_into_a_run_folder_cleans_and_leaves_no_staging(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_into(nn.Linear(2, 2), run, None)
    save_into(nn.Linear(2, 2), run, None)
    assert sorted(p.name for p in run.iterdir()) == ["ht2.json", "model.safetensors"]


NOHUP = """
import os, signal, time
from ht2.cli.signals import install_interrupt_handlers

signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
install_interrupt_handlers()
print("sighup ignored:", signal.getsignal(signal.SIGHUP) is signal.SIG_IGN)
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
except KeyboardInterrupt as interrupt:
    print("interrupted by", interrupt)
"""


def test_interrupt_handlers_keep_an_ignored_sighup_and_raise_for_sigterm() -> None:
    done = subprocess.run([sys.executable, "-c", NOHUP], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["sighup ignored: True", "interrupted by SIGTERM"]


# modes


@pytest.mark.parametrize(
    ("umask", "folder", "file"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)]
)
def test_folders_and_files_follow_the_umask(
    tmp_path: Path, umask: int, folder: int, file: int
) -> None:
    old = os.umask(umask)
    try:
        out = _save(tmp_path / "m")
        run = tmp_path / "run"
        save_into(nn.Linear(2, 2), run, None)
    finally:
        os.umask(old)
    for path in (out, run):
        assert stat.S_IMODE(path.stat().st_mode) == folder
        assert stat.S_IMODE((path / "model.safetensors").stat().st_mode) == file
