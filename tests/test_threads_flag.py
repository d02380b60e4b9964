"""--threads on every computing subcommand: one flag, parsed alike, applied to the whole run."""

from __future__ import annotations

import argparse

import pytest
import torch

from ht2.cli import evaluate
from ht2.cli.main import build_parser
from ht2.metrics.latency import num_threads
from tests.conftest import CliRunner

PRINT_ONLY = {"models", "report"}  # they read a file or the registry and print it
MINIMAL = {  # the fewest arguments each computing subcommand parses with
    "compress": ["cifar10_resnet20", "--random-init", "--out", "o"],
    "evaluate": ["cifar10_resnet20", "--data", "d"],
    "calibrate": ["m", "--data", "d", "--out", "o"],
    "finetune": ["m", "--data", "d", "--out", "o"],
    "train": ["cifar10_resnet20", "--data", "d", "--out", "o"],
    "sweep": ["cifar10_resnet20", "--random-init", "--out", "o"],
    "compare": ["cifar10_resnet20", "--random-init", "--data", "d", "--out", "o"],
    "benchmark": ["cifar10_resnet20"],
    "export": ["m", "--out", "o"],
    "prune": ["cifar10_resnet20", "--random-init", "--target-params", "2", "--out", "o"],
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _threads_help(parser: argparse.ArgumentParser) -> str | None:
    found = [a for a in parser._actions if "--threads" in a.option_strings]
    return found[0].help if found else None


def test_every_computing_subcommand_has_threads_and_only_those() -> None:
    with_flag = {name for name, sub in _subparsers().items() if _threads_help(sub)}
    assert with_flag == set(_subparsers()) - PRINT_ONLY
    assert set(MINIMAL) == with_flag


def test_threads_has_one_wording_everywhere() -> None:
    helps = {_threads_help(sub) for name, sub in _subparsers().items() if name not in PRINT_ONLY}
    stems = {text.rsplit("(default:", 1)[0] for text in helps}
    assert len(stems) == 1, helps


@pytest.mark.parametrize("command", sorted(MINIMAL))
def test_threads_is_parsed(command: str) -> None:
    parser = build_parser()
    default = 1 if command == "compare" else None  # compare times its rows on one thread
    assert parser.parse_args([command, *MINIMAL[command]]).threads == default
    assert parser.parse_args([command, *MINIMAL[command], "--threads", "3"]).threads == 3


@pytest.mark.parametrize("value", ["0", "-1", "abc"])
@pytest.mark.parametrize("command", sorted(MINIMAL))
def test_a_bad_thread_count_is_one_line_and_exit_2(
    command: str, value: str, cli: CliRunner
) -> None:
    code, out, err = cli([command, *MINIMAL[command], "--threads", value])
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"argument --threads: expected a positive integer, at least 1, got {value}" in err


def test_the_command_runs_with_its_threads_and_then_restores_them(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []

    def run(args: argparse.Namespace) -> int:
        seen.append(torch.get_num_threads())
        return 0

    monkeypatch.setattr(evaluate, "run", run)
    with num_threads(2):
        assert cli(["evaluate", *MINIMAL["evaluate"], "--threads", "1"])[0] == 0
        assert torch.get_num_threads() == 2
        assert cli(["evaluate", *MINIMAL["evaluate"]])[0] == 0
    assert seen == [1, 2]
