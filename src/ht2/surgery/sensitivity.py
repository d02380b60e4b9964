"""The sensitivity allocation: measure what each layer's compression costs the network's output.

For each replaced layer alone and each candidate energy, the layer is factorized at that
energy's ranks and the network run on calibration images; the damage is the mean KL divergence
of its class distribution from the uncompressed network's. With `bn_aware`, every BatchNorm
normalises by the statistics of the calibration batch itself (in both networks), which is what
BN re-estimation after compression will do, so errors that calibration repairs are not
counted. Damage between candidates is interpolated on the layer's cost; a knapsack then picks
per-layer energies of least summed damage within the budget.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ht2.choices import SENSITIVITY_ENERGIES as CANDIDATES
from ht2.errors import HT2Error
from ht2.layers import factorize
from ht2.layers.norms import NORMS
from ht2.surgery.budget import AllocLayer, Budget
from ht2.surgery.knapsack import Option, cheapest_total, choose
from ht2.surgery.ranking import has_unfoldings, round_up
from ht2.surgery.targets import TOLERANCE

GRID_POINTS = 241  # energies per layer between the smallest candidate and 1 (CP: 41)


@dataclass(frozen=True)
class SensitivityOptions:
    """How sensitivity is measured (defaults as on the command line)."""

    candidates: tuple[float, ...] = CANDIDATES
    bn_aware: bool = True
    batch_size: int = 256  # images per forward pass when not BN-aware
    sweeps: int = 0  # refinement rounds of the factors measured, as compress() will make them

    def check(self) -> None:
        if not self.candidates or any(not 0 < e < 1 for e in self.candidates):
            raise HT2Error("candidate energies must lie strictly between 0 and 1, e.g. 0.5,0.8,0.9")
        if self.sweeps < 0:
            raise HT2Error(
                f"refine_sweeps must be 0 or more, got {self.sweeps}", params="refine_sweeps"
            )


def batch_statistics(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode whose BatchNorms normalise by each batch's statistics."""
    work = copy.deepcopy(model).eval()
    for module in work.modules():
        if isinstance(module, NORMS):
            module.running_mean = None
            module.running_var = None
    return work


class DamageMeter:
    """Mean KL divergence of a network's class distribution from a reference's, on fixed images."""

    def __init__(self, model: nn.Module, images: torch.Tensor, batch_size: int):
        self.model = model
        self.chunks = images.split(batch_size)
        self.reference = [self._log_probs(chunk) for chunk in self.chunks]

    @torch.no_grad()
    def _log_probs(self, images: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.model(images).float().flatten(1), dim=1)

    def damage(self) -> float:
        """KL(reference || current model), averaged over the images."""
        total, count = 0.0, 0
        for chunk, ref in zip(self.chunks, self.reference, strict=True):
            new = self._log_probs(chunk)
            total += float((ref.exp() * (ref - new)).sum())
            count += len(chunk)
        return max(total / count, 0.0)


def measure(
    model: nn.Module,
    budget: Budget,
    images: torch.Tensor,
    options: SensitivityOptions,
    progress: bool = False,
) -> dict[str, list[Option]]:
    """For each layer, (energy, cost, damage) at every candidate energy and at energy 1."""
    device = next(model.parameters()).device
    work = batch_statistics(model) if options.bn_aware else copy.deepcopy(model).eval()
    batch = len(images) if options.bn_aware else options.batch_size
    meter = DamageMeter(work, images.to(device), batch)
    energies = sorted({*options.candidates, 1.0})
    curves: dict[str, list[Option]] = {}
    bar = tqdm(
        total=len(budget.layers) * len(energies),
        desc="sensitivity",
        unit="try",
        disable=None if progress else True,
        leave=False,
    )
    for layer in budget.layers:
        dense = work.get_submodule(layer.name)
        measured: dict[tuple, float] = {}
        curve = []
        for energy in energies:
            bar.update()
            ranks = _rounded(layer, budget, energy)
            cost = budget.cost(layer, ranks)
            key = tuple(sorted(ranks.items()))
            if cost == layer.dense and budget.keep_if_larger:
                measured[key] = 0.0  # stays dense
            elif key not in measured:
                factors = factorize(dense, layer.method, ranks=ranks, sweeps=options.sweeps)
                work.set_submodule(layer.name, factors)
                measured[key] = meter.damage()
                work.set_submodule(layer.name, dense)
            curve.append(Option(energy, cost, measured[key]))
        curves[layer.name] = curve
    bar.close()
    return curves


def _rounded(layer: AllocLayer, budget: Budget, energy: float) -> dict[str, int]:
    ranks = layer.ranker.at_energy(energy)
    return round_up(layer.method, ranks, budget.round_ranks, layer.module.weight.shape)


def layer_options(layer: AllocLayer, budget: Budget, curve: Sequence[Option]) -> list[Option]:
    """Every distinct cost on a fine energy grid, its damage interpolated from `curve` by cost."""
    points = GRID_POINTS if has_unfoldings(layer.method) else 41  # CP: each point is a fit
    low = min(o.energy for o in curve)
    grid = sorted({*np.linspace(low, 1.0, points).tolist(), *(o.energy for o in curve)})
    costs, damages = _monotone(curve)
    by_cost: dict[int, float] = {}
    for energy in grid:
        by_cost[budget.cost(layer, layer.ranker.at_energy(energy))] = energy  # keep the highest
    return [
        Option(energy, cost, float(np.interp(cost, costs, damages)))
        for cost, energy in sorted(by_cost.items())
    ]


def _monotone(curve: Sequence[Option]) -> tuple[np.ndarray, np.ndarray]:
    """Measured (cost, damage) points, one per cost, damage never rising as cost grows."""
    least: dict[int, float] = {}
    for option in curve:
        least[option.cost] = min(option.damage, least.get(option.cost, np.inf))
    costs = np.array(sorted(least), dtype=np.float64)
    damages = np.minimum.accumulate(np.array([least[c] for c in sorted(least)]))
    return costs, damages


def allocate_sensitivity(
    budget: Budget, curves: dict[str, list[Option]]
) -> tuple[dict[str, float], float]:
    """(energy per layer, predicted reduction) of least summed damage within the budget."""
    options = [layer_options(layer, budget, curves[layer.name]) for layer in budget.layers]
    capacity = budget.limit - budget.fixed
    smallest = cheapest_total(options)
    if smallest > capacity:
        reached = budget.reduction(smallest)
        if reached < budget.target.factor * (1 - TOLERANCE):
            low = min(min(o.energy for o in curve) for curve in curves.values())
            raise HT2Error(
                f"{budget.target.factor:g}x fewer {budget.target.kind} is out of reach for the "
                f"sensitivity allocation: every layer at its smallest candidate energy ({low:g}) "
                f"gives {reached:.2f}x (add a lower candidate energy, or lower the target)"
            )
        capacity = smallest
    chosen = choose(options, capacity)
    picked = [layer[i] for layer, i in zip(options, chosen, strict=True)]
    energies = {layer.name: o.energy for layer, o in zip(budget.layers, picked, strict=True)}
    return energies, budget.reduction(sum(o.cost for o in picked))
