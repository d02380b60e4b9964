"""Least-squares refit of a factorized layer so that its output matches the original's.

Everything is computed from a layer's LayerStats in float64, without another pass over the
images: the output error is a quadratic function of the dense weight the factors stand for.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ht2.dataaware.stats import LayerStats
from ht2.layers import FactorizedLayer


def ridge_strength(stats: LayerStats, ridge: float) -> float:
    """The ridge added to every eigenvalue of sum p p^T: `ridge` times their mean."""
    return ridge * float(stats.s_pp.diagonal().mean())


def rest_matrix(layer: FactorizedLayer) -> torch.Tensor:
    """M such that dense weight = expand weight (T x J) @ M (J x P), in float64.

    Found by setting the `expand` child to the identity on its fan-in J: every factorized
    layer is linear in that child, row by row.
    """
    probe = copy.deepcopy(layer).double()
    weight = probe.expand.weight
    fan_in = weight[0].numel()
    probe.expand.weight = nn.Parameter(
        torch.eye(fan_in, dtype=torch.float64).reshape(fan_in, *weight.shape[1:])
    )
    with torch.no_grad():
        return probe.dense_weight().reshape(fan_in, -1)


def _bias(layer: FactorizedLayer) -> torch.Tensor | None:
    return layer.expand.bias


def objective(layer: FactorizedLayer, stats: LayerStats, lam: float) -> torch.Tensor:
    """Output error on the calibration samples plus lam * |W|^2, relative to sum |y|^2."""
    weight = layer.dense_weight().reshape(layer.expand.weight.shape[0], -1)
    error = stats.error_tensor(weight, _bias(layer)) + lam * weight.double().square().sum()
    return error / max(stats.s_yy, 1e-300)


def refit_expand(layer: FactorizedLayer, stats: LayerStats, ridge: float = 1e-3) -> None:
    """Set the `expand` child's weight and bias (when it has one) to their ridge least-squares
    optimum given the other factors, in place."""
    m = rest_matrix(layer)
    lam = ridge_strength(stats, ridge)
    damped = stats.s_pp + lam * torch.eye(stats.s_pp.shape[0], dtype=torch.float64)
    gram = m @ damped @ m.T
    cross = stats.s_yp @ m.T
    bias = _bias(layer)
    if bias is not None:
        z_sum = m @ stats.s_p
        gram = torch.cat(
            [
                torch.cat([gram, z_sum[:, None]], dim=1),
                torch.cat([z_sum, torch.tensor([float(stats.n)], dtype=torch.float64)])[None],
            ]
        )
        cross = torch.cat([cross, stats.s_y[:, None]], dim=1)
    jitter = 1e-12 * float(gram.diagonal().mean().abs()) + 1e-300
    solution = torch.linalg.solve(
        gram + jitter * torch.eye(gram.shape[0], dtype=torch.float64), cross.T
    ).T
    weight = layer.expand.weight
    with torch.no_grad():
        fan_in = weight[0].numel()
        weight.copy_(solution[:, :fan_in].reshape(weight.shape).to(weight.dtype))
        if bias is not None:
            bias.copy_(solution[:, fan_in].to(bias.dtype))


def refit_all(
    layer: FactorizedLayer, stats: LayerStats, ridge: float = 1e-3, iterations: int = 200
) -> bool:
    """Fit every factor jointly (L-BFGS on the exact quadratic output error), then the `expand`
    child in closed form; in place. Keeps the old factors unless the error went down; says
    whether it did.
    """
    lam = ridge_strength(stats, ridge)
    trial = copy.deepcopy(layer).double()
    with torch.no_grad():
        before = float(objective(trial, stats, lam))
    params = [p for p in trial.parameters()]
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=iterations,
        history_size=20,
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective(trial, stats, lam)
        loss.backward()
        return loss

    optimizer.step(closure)
    for param in params:
        param.requires_grad_(False)
    refit_expand(trial, stats, ridge)
    with torch.no_grad():
        after = float(objective(trial, stats, lam))
    if not after < before:
        return False
    with torch.no_grad():
        for mine, fitted in zip(layer.parameters(), trial.parameters(), strict=True):
            mine.copy_(fitted.to(mine.dtype))
    return True
