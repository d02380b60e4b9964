"""The matrices each method's ranks come from, named by the rank they set."""

from __future__ import annotations

import torch


def _ht2(kernel: torch.Tensor) -> dict[str, torch.Tensor]:
    x = kernel.permute(1, 2, 0, 3)  # C x D1 x T x D2, the X of the paper
    c, d1, t, d2 = x.shape
    return {
        "r1": x.reshape(c, -1),
        "r13": x.reshape(c * d1, t * d2),
        "r3": x.permute(2, 0, 1, 3).reshape(t, -1),
    }


def _tucker2(kernel: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "r_in": kernel.transpose(0, 1).reshape(kernel.shape[1], -1),
        "r_out": kernel.reshape(kernel.shape[0], -1),
    }


def _spatial_svd(kernel: torch.Tensor) -> dict[str, torch.Tensor]:
    t, c, d1, d2 = kernel.shape
    return {"r": kernel.permute(1, 2, 0, 3).reshape(c * d1, t * d2)}


def _svd(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"r": weight.reshape(weight.shape[0], -1)}


_UNFOLDINGS = {"ht2": _ht2, "tucker2": _tucker2, "spatial_svd": _spatial_svd, "svd": _svd}


def rank_unfoldings(method: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each rank's matrix for `method` (ht2, tucker2, spatial_svd, svd): its energy sets the rank.

    CP has no such matrices (its rank comes from the fit error), so it raises ValueError.
    """
    try:
        unfold = _UNFOLDINGS[method]
    except KeyError:
        raise ValueError(f"method {method!r} has no rank unfoldings") from None
    if method != "svd" and weight.dim() != 4:
        raise ValueError(f"{method} needs a 4-D kernel, got shape {tuple(weight.shape)}")
    return unfold(weight.detach())


def has_unfoldings(method: str) -> bool:
    """Whether `method`'s ranks come from singular values of unfoldings (all but CP)."""
    return method in _UNFOLDINGS
