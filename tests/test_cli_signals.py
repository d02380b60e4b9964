"""`ht2` stopped by SIGTERM or SIGHUP while writing its output: nothing is left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Compress a tiny random model; the write of the output folder stalls until a signal comes.
_SCRIPT = """
import sys, time
import signal
signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a command started from a terminal: a test run
signal.signal(signal.SIGINT, signal.default_int_handler)  # under nohup or `&` inherits both ignored
import ht2.io.artefacts as artefacts
real = artefacts.write_model
def stalled(model, directory, report):
    real(model, directory, report)
    (directory / "READY").write_text("")
    time.sleep(60)
artefacts.write_model = stalled
from ht2.cli.main import main
sys.exit(main(["compress", "cifar10_resnet20", "--random-init", "--out", sys.argv[1]]))
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_signal_during_the_final_write_leaves_no_staging_folder(
    tmp_path: Path, signame: str
) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(  # its own session and no inherited stdin/stdout: under
        [sys.executable, "-c", _SCRIPT, str(out)],  # pytest-xdist those are the worker's pipes
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.*/READY")):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the write never started"
        time.sleep(0.1)
    process.send_signal(getattr(signal, signame))
    code = process.wait(timeout=60)
    err = process.stderr.read()
    assert code == 128 + getattr(signal, signame)
    assert err.strip().splitlines()[-1] == "ht2: interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []
