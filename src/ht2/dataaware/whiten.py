"""Activation-whitened factors: decompose W x_in S^(1/2), then give the first factor S^(-1/2).

The structure and ranks are those of the plain factors; only what the factors keep changes:
the directions that the layer's inputs actually excite weigh more.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ht2.layers import FactorizedLayer, factorize


@dataclass(frozen=True)
class Root:
    """A damped covariance's symmetric square root and inverse square root (float64)."""

    half: torch.Tensor
    inverse_half: torch.Tensor
    damping: float  # added to every eigenvalue, as a fraction of the mean eigenvalue
    weak: int  # eigenvalues below the damping before it was added


def damped_root(covariance: torch.Tensor, damping: float = 1e-2) -> Root:
    """Square roots of covariance + damping * mean(diag) * I, by eigendecomposition."""
    cov = covariance.double()
    cov = (cov + cov.T) / 2
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(0)
    floor = damping * float(values.mean()) if float(values.mean()) > 0 else 1.0
    weak = int((values < floor).sum())
    damped = values + floor
    half = (vectors * damped.sqrt()) @ vectors.T
    inverse_half = (vectors * damped.rsqrt()) @ vectors.T
    return Root(half, inverse_half, damping, weak)


def _times_input_mode(weight: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """weight (T x C x ...) multiplied along its input-channel mode: sum_c' W[t,c'] M[c',c]."""
    out = torch.einsum("tc...,cd->td...", weight.double(), matrix)
    return out.to(weight.dtype)


def first_factor(layer: FactorizedLayer) -> nn.Module:
    """The child that sees the layer's input (the first one built and run)."""
    return next(iter(layer.children()))


def whitened_factorize(
    layer: nn.Module,
    method: str,
    root: Root,
    ranks: dict[str, int] | None = None,
    energy: float | None = None,
) -> FactorizedLayer:
    """Factorize `layer` on its whitened weight (ranks given, or by `energy` on the whitened
    weight), then fold the inverse root into the first factor so that it takes raw inputs.

    `rel_error` of the result is its weight error against the original, unwhitened layer.
    """
    whitened = copy.deepcopy(layer)
    with torch.no_grad():
        whitened.weight.copy_(_times_input_mode(layer.weight, root.half))
    factors = factorize(whitened, method, energy=None if ranks else energy, ranks=ranks)
    first = first_factor(factors)
    with torch.no_grad():
        first.weight.copy_(_times_input_mode(first.weight, root.inverse_half))
        approx = factors.dense_weight()
        factors.rel_error = float(
            torch.linalg.norm(approx - layer.weight) / torch.linalg.norm(layer.weight)
        )
    return factors
