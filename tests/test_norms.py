"""Every step that handles BatchNorm statistics treats the same layers, SyncBatchNorm too."""

from __future__ import annotations

import torch
from torch import nn

from ht2.surgery.sensitivity import batch_statistics
from ht2.train.calibrate import recalibrate_batchnorm


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.ReLU())


def test_sensitivity_measures_sync_batchnorm_with_batch_statistics() -> None:
    work = batch_statistics(_model())
    norm = work[1]
    assert norm.running_mean is None and norm.running_var is None
    x = torch.randn(8, 3, 6, 6)
    with torch.no_grad():
        conv = work[0](x)
        mean, var = conv.mean((0, 2, 3)), conv.var((0, 2, 3), unbiased=False)
        expected = torch.relu((conv - mean[:, None, None]) / (var[:, None, None] + norm.eps).sqrt())
        torch.testing.assert_close(work(x), expected, rtol=1e-4, atol=1e-5)


def test_calibration_re_estimates_sync_batchnorm() -> None:
    model = _model()
    x = torch.randn(16, 3, 6, 6)
    assert recalibrate_batchnorm(model, [(x, torch.zeros(16))], 16, progress=False) == 16
    with torch.no_grad():
        conv = model[0](x)
    torch.testing.assert_close(model[1].running_mean, conv.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
