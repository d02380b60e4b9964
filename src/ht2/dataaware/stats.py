"""Streaming second-order statistics of one layer: all that a least-squares fit needs.

Memory is bounded by the layer's fan-in P and out-channels T (a P x P and a T x P matrix in
float64), never by the number of images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerStats:
    """Sums over calibration samples of input columns p (fan-in P) and targets y (T).

    s_pp = sum p p^T, s_yp = sum y p^T, s_p = sum p, s_y = sum y, s_yy_rows = sum y_t^2 per
    output channel, n samples.
    """

    s_pp: torch.Tensor
    s_yp: torch.Tensor
    s_p: torch.Tensor
    s_y: torch.Tensor
    s_yy_rows: torch.Tensor
    n: int = 0

    @property
    def s_yy(self) -> float:
        """sum |y|^2 over all samples and channels."""
        return float(self.s_yy_rows.sum())

    @classmethod
    def empty(cls, fan_in: int, out: int) -> LayerStats:
        f64 = torch.float64
        return cls(
            torch.zeros(fan_in, fan_in, dtype=f64),
            torch.zeros(out, fan_in, dtype=f64),
            torch.zeros(fan_in, dtype=f64),
            torch.zeros(out, dtype=f64),
            torch.zeros(out, dtype=f64),
        )

    def add(self, patches: torch.Tensor, targets: torch.Tensor) -> None:
        """Add samples: `patches` is P x n, `targets` T x n (one column per sample)."""
        p, y = patches.float(), targets.float()
        self.s_pp += (p @ p.T).double()
        self.s_yp += (y @ p.T).double()
        self.s_p += p.sum(dim=1, dtype=torch.float64)
        self.s_y += y.sum(dim=1, dtype=torch.float64)
        self.s_yy_rows += (y * y).sum(dim=1, dtype=torch.float64)
        self.n += p.shape[1]

    def channel_covariance(self, channels: int) -> torch.Tensor:
        """E[x x^T] over input channels (C x C), averaged over the kernel taps."""
        taps = self.s_pp.shape[0] // channels
        blocks = self.s_pp.reshape(channels, taps, channels, taps)
        return torch.einsum("ikjk->ij", blocks) / (taps * max(self.n, 1))

    def error_tensor(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """sum |y - W p - b|^2 over the samples for W (T x P) and b (T), differentiably."""
        w = weight.double()
        total = self.s_yy - 2 * (w * self.s_yp).sum() + ((w @ self.s_pp) * w).sum()
        if bias is not None:
            b = bias.double()
            total = total - 2 * b @ self.s_y + 2 * b @ (w @ self.s_p) + self.n * b @ b
        return total

    def rel_error(self, weight: torch.Tensor, bias: torch.Tensor | None) -> float:
        """The output error relative to the targets' norm: |Y - W P - b| / |Y|."""
        with torch.no_grad():
            error = float(self.error_tensor(weight, bias))
        return (max(error, 0.0) / max(self.s_yy, 1e-300)) ** 0.5
