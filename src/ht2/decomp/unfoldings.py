"""The matrices each method's ranks come from, named by the rank they set.

One function per method (CP has none: its rank comes from its fit error); the method
registry (ht2.layers.registry) says which belongs to which method.
"""

from __future__ import annotations

import torch


def _kernel(kernel: torch.Tensor, method: str) -> torch.Tensor:
    """`kernel` detached, once it is checked to be 4-D (T x C x D1 x D2)."""
    if kernel.dim() != 4:
        raise ValueError(f"{method} needs a 4-D kernel, got shape {tuple(kernel.shape)}")
    return kernel.detach()


def ht2_unfoldings(kernel: torch.Tensor) -> dict[str, torch.Tensor]:
    """HT-2: the three matricizations of X (C x D1 x T x D2) that set r1, r13 and r3."""
    x = _kernel(kernel, "ht2").permute(1, 2, 0, 3)  # C x D1 x T x D2, the X of the paper
    c, d1, t, d2 = x.shape
    return {
        "r1": x.reshape(c, -1),
        "r13": x.reshape(c * d1, t * d2),
        "r3": x.permute(2, 0, 1, 3).reshape(t, -1),
    }


def tucker2_unfoldings(kernel: torch.Tensor) -> dict[str, torch.Tensor]:
    """Tucker-2: the input- and output-channel unfoldings."""
    kernel = _kernel(kernel, "tucker2")
    return {
        "r_in": kernel.transpose(0, 1).reshape(kernel.shape[1], -1),
        "r_out": kernel.reshape(kernel.shape[0], -1),
    }


def spatial_svd_unfoldings(kernel: torch.Tensor) -> dict[str, torch.Tensor]:
    """Spatial SVD: the (C D1) x (T D2) matrix."""
    kernel = _kernel(kernel, "spatial_svd")
    t, c, d1, d2 = kernel.shape
    return {"r": kernel.permute(1, 2, 0, 3).reshape(c * d1, t * d2)}


def svd_unfoldings(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """SVD (Tucker-1 of a conv, or a Linear weight): rows are the output channels."""
    return {"r": weight.detach().reshape(weight.shape[0], -1)}
