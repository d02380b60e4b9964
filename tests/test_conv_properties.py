"""Property tests over conv geometries: at full rank a compressed conv computes what the
dense one did, and a saved and loaded copy computes it bit for bit."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ht2

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

REL_TOL = 1e-4
METHODS = ["ht2", "tucker2", "spatial-svd"]  # CP fits by ALS: not exact at any rank


class DynamicSameConv(nn.Conv2d):
    """A user's TensorFlow-'SAME' conv: padding worked out from each input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for axis in (1, 0):
            size, k = x.shape[2 + axis], self.kernel_size[axis]
            s, d = self.stride[axis], self.dilation[axis]
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


@st.composite
def geometries(draw) -> dict:
    """Keyword arguments of one nn.Conv2d, the layer's class and an input size it accepts."""
    groups = draw(st.sampled_from([1, 1, 1, 2]))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kind = draw(st.sampled_from(["plain", "plain", "dynamic_same"]))
    if kind == "dynamic_same":
        padding, mode = 0, "zeros"
    else:
        choices = ["int", "tuple", "valid"] + (["same"] if stride == (1, 1) else [])
        style = draw(st.sampled_from(choices))
        padding = {
            "int": draw(st.integers(0, 2)),
            "tuple": (draw(st.integers(0, 2)), draw(st.integers(0, 2))),
            "valid": "valid",
            "same": "same",
        }[style]
        mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    size = [span + 2 + draw(st.integers(0, 5)) for span in spans]
    return {
        "kind": kind,
        "size": size,
        "conv": {
            "in_channels": 2 * draw(st.integers(1, 3)),
            "out_channels": 2 * draw(st.integers(1, 3)),
            "kernel_size": kernel,
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": groups,
            "bias": draw(st.booleans()),
            "padding_mode": mode,
        },
        "method": draw(st.sampled_from(METHODS)),
    }


def _model(geometry: dict, seed: int) -> nn.Module:
    """A 1x1 stem (the first conv, so the conv under test gets `method`), then the conv."""
    torch.manual_seed(seed)
    layer = DynamicSameConv if geometry["kind"] == "dynamic_same" else nn.Conv2d
    conv = geometry["conv"]
    return nn.Sequential(nn.Conv2d(3, conv["in_channels"], 1), layer(**conv)).eval()


@hypothesis.settings(max_examples=25, deadline=None, derandomize=True, database=None)
@hypothesis.given(geometry=geometries())
def test_full_rank_conv_equals_the_dense_one_and_round_trips_bit_exactly(geometry) -> None:
    model = _model(geometry, seed=0)
    x = torch.randn(2, 3, *geometry["size"])
    with torch.no_grad():
        expected = model(x)
    report = ht2.compress(model, energy=1.0, method=geometry["method"], keep_if_larger=False)
    with torch.no_grad():
        actual = model(x)
    error = torch.linalg.norm(actual - expected) / torch.linalg.norm(expected).clamp_min(1e-12)
    assert error < REL_TOL, report.layers[1]
    conv = report.layers[1]
    assert (conv.method == "dense") == (geometry["conv"]["groups"] != 1), conv.reason
    with tempfile.TemporaryDirectory() as folder:
        ht2.save(model, Path(folder) / "out", report)
        loaded = ht2.load(Path(folder) / "out", model=_model(geometry, seed=1))
    with torch.no_grad():
        assert torch.equal(loaded(x), actual)
