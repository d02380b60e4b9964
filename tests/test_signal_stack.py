"""The calling thread's alternate signal stack survives OpenVINO (ht2.export.signal_stack)."""

from __future__ import annotations

import ctypes
import gc
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ht2.export import signal_stack
from ht2.export.signal_stack import current_signal_stack, kept_signal_stack

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="sigaltstack is read through Linux's libc"
)


def test_the_block_may_change_the_stack_and_it_is_put_back() -> None:
    before = current_signal_stack()
    buffer = ctypes.create_string_buffer(1 << 16)
    with kept_signal_stack():
        signal_stack._set_signal_stack((ctypes.addressof(buffer), 0, len(buffer)))
        assert current_signal_stack() == (ctypes.addressof(buffer), 0, len(buffer))
    assert current_signal_stack() == before
    del buffer


def test_compiling_and_releasing_openvino_models_leaves_the_stack_as_it_was(
    tmp_path: Path,
) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    from ht2.export.openvino_runtime import OpenVinoRunner

    path = tmp_path / "m.onnx"
    torch.onnx.export(nn.Conv2d(3, 4, 3).eval(), torch.zeros(1, 3, 8, 8), path, dynamo=False)
    before = current_signal_stack()
    runners = [OpenVinoRunner(path, threads=1) for _ in range(2)]  # a second one swaps stacks
    assert current_signal_stack() == before
    for runner in runners:
        assert runner(torch.zeros(1, 3, 8, 8)).shape == (1, 4, 6, 6)
    runners.clear()
    gc.collect()
    assert current_signal_stack() == before
