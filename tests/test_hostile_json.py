"""Every JSON file ht2 reads, written to break the parser rather than the schema: a number too
long for int() and nesting deeper than the stack. Each must end in one HT2Error naming the
file (or, where a file is only probed, a plain "not ours"), never a ValueError or
RecursionError traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ht2
from ht2.errors import HT2Error
from ht2.io.artefacts import MANIFEST, REPORT, read_report
from ht2.io.atomic import written_by_ht2
from ht2.io.plan_file import read_plan
from ht2.io.rank_file import read_rank_file
from ht2.train.checkpoint import STATE, read_checkpoint_meta
from ht2.train.runner import _rewrite_log

PAYLOADS = {
    "a 5,000-digit number": '{"format": "ht2", "format_version": ' + "9" * 5000 + "}",
    "200,000 nested lists": "[" * 200_000,
}


@pytest.fixture(params=list(PAYLOADS), ids=list(PAYLOADS))
def payload(request: pytest.FixtureRequest) -> str:
    return PAYLOADS[request.param]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return ht2.save(ht2.models.create("cifar10_resnet20"), tmp_path / "model")


def test_manifest(folder: Path, payload: str) -> None:
    (folder / MANIFEST).write_text(payload)
    with pytest.raises(HT2Error, match=r"ht2\.json is not valid JSON"):
        ht2.load(folder)


def test_report(folder: Path, payload: str) -> None:
    (folder / REPORT).write_text(payload)
    with pytest.raises(HT2Error, match=r"report\.json is not valid JSON"):
        read_report(folder)


def test_report_command(folder: Path, payload: str, cli) -> None:
    (folder / REPORT).write_text(payload)
    code, stdout, stderr = cli(["report", str(folder)])
    assert (code, stdout) == (2, "")
    assert len(stderr.splitlines()) == 1
    assert "report.json is not valid JSON" in stderr


def test_plan_file(tmp_path: Path, payload: str) -> None:
    (tmp_path / "plan.json").write_text(payload)
    with pytest.raises(HT2Error, match=r"plan\.json: not a JSON plan"):
        read_plan(tmp_path / "plan.json")


def test_rank_file(tmp_path: Path, payload: str) -> None:
    (tmp_path / "ranks.json").write_text(payload)
    with pytest.raises(HT2Error, match=r"cannot read ranks file .*ranks\.json"):
        read_rank_file(tmp_path / "ranks.json")


def test_checkpoint_state(tmp_path: Path, payload: str) -> None:
    (tmp_path / STATE).write_text(payload)
    with pytest.raises(HT2Error, match=r"state\.json is damaged"):
        read_checkpoint_meta(tmp_path)


def test_run_log_on_resume(tmp_path: Path, payload: str) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"epoch": 1, "top1": 50.0}) + "\n" + payload + "\n")
    with pytest.raises(HT2Error, match=r"log\.jsonl is damaged"):
        _rewrite_log(log, 1)


def test_probed_folder_is_not_ours(tmp_path: Path, payload: str) -> None:
    """check_output_dir asks whether a folder is ht2's before replacing it: a hostile
    ht2.json makes it someone else's, which is refused, not a crash."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MANIFEST).write_text(payload)
    assert not written_by_ht2(tmp_path / "out")
