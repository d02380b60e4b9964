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


def ridge_fit(
    stats: LayerStats, m: torch.Tensor | None, ridge: float, with_bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ridge least squares for A (T x J) and b in y ~ A (M p) + b, from the statistics alone
    (M = None: the identity, a dense layer).

    The ridge is on the dense weight A M (as the objective has it); the bias is not damped.
    """
    lam = ridge_strength(stats, ridge)
    damped = stats.s_pp + lam * torch.eye(stats.s_pp.shape[0], dtype=torch.float64)
    gram = damped if m is None else m @ damped @ m.T
    cross = stats.s_yp if m is None else stats.s_yp @ m.T
    if with_bias:
        z_sum = stats.s_p if m is None else m @ stats.s_p
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
    fan_in = gram.shape[0] - int(with_bias)
    return solution[:, :fan_in], solution[:, fan_in] if with_bias else None


def _set_weight_and_bias(
    module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None
) -> None:
    with torch.no_grad():
        module.weight.copy_(weight.reshape(module.weight.shape).to(module.weight.dtype))
        if bias is not None:
            module.bias.copy_(bias.to(module.bias.dtype))


def refit_expand(layer: FactorizedLayer, stats: LayerStats, ridge: float = 1e-3) -> None:
    """Set the `expand` child's weight and bias (when it has one) to their ridge least-squares
    optimum given the other factors, in place."""
    weight, bias = ridge_fit(stats, rest_matrix(layer), ridge, _bias(layer) is not None)
    _set_weight_and_bias(layer.expand, weight, bias)


def refit_dense(layer: nn.Module, stats: LayerStats, ridge: float = 1e-3) -> bool:
    """Refit a dense Conv2d or Linear (weight, and bias where it has one) to the targets in
    `stats`, in place, if that lowers its output error there; says whether it did.

    Used for layers left dense after compressed ones: they can undo part of the error that
    reaches them (the classifier above all).
    """
    weight, bias = ridge_fit(stats, None, ridge, layer.bias is not None)
    flat = layer.weight.reshape(layer.weight.shape[0], -1)
    if not stats.rel_error(weight, bias) < (1 - 1e-6) * stats.rel_error(flat, layer.bias):
        return False  # no better beyond rounding
    _set_weight_and_bias(layer, weight, bias)
    return True


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
