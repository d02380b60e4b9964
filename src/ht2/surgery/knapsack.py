"""Pick one option per layer: least summed damage whose summed cost fits a capacity.

An exact knapsack by dynamic programming over the cost axis cut into `slots` units (each
option's cost rounded up, so the choice always fits), then a greedy pass on exact costs that
spends what rounding left over where it lowers the damage most per unit of cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Option:
    """One way to treat a layer: the energy it keeps, what it costs and the damage measured."""

    energy: float
    cost: int
    damage: float


def cheapest_total(options: list[list[Option]]) -> int:
    """The smallest summed cost any choice can reach."""
    return sum(min(o.cost for o in layer) for layer in options)


def choose(
    options: list[list[Option]], capacity: float, slots: int = 16384, spend: float = 0.99
) -> list[int]:
    """Index of the chosen option per layer; ValueError when even the cheapest does not fit.

    Among choices that spend at least `spend` of the capacity (where any does) the least
    damage wins, so a flat damage curve does not leave the budget half used.
    """
    if cheapest_total(options) > capacity:
        raise ValueError("capacity below the cheapest choice")
    unit = max(capacity, 1.0) / slots
    best = np.full(slots + 1, np.inf)
    best[0] = 0.0
    back: list[np.ndarray] = []
    weights: list[list[int]] = []
    for layer in options:
        layer_weights = [min(math.ceil(o.cost / unit - 1e-9), slots + 1) for o in layer]
        new = np.full(slots + 1, np.inf)
        pick = np.full(slots + 1, -1, dtype=np.int32)
        for index, (option, weight) in enumerate(zip(layer, layer_weights, strict=True)):
            if weight > slots:
                continue
            shifted = best[: slots + 1 - weight] + option.damage
            window = new[weight:]
            better = shifted < window
            window[better] = shifted[better]
            pick[weight:][better] = index
        best = new
        back.append(pick)
        weights.append(layer_weights)
    if not np.isfinite(best).any():  # rounding up pushed the cheapest choice out: use it
        return [min(range(len(layer)), key=lambda i: layer[i].cost) for layer in options]
    floor = int(spend * slots)
    spent = best[floor:]
    slot = floor + int(np.argmin(spent)) if np.isfinite(spent).any() else int(np.argmin(best))
    chosen = [0] * len(options)
    for layer_index in range(len(options) - 1, -1, -1):
        index = int(back[layer_index][slot])
        chosen[layer_index] = index
        slot -= weights[layer_index][index]
    return fill_slack(options, chosen, capacity)


def fill_slack(options: list[list[Option]], chosen: list[int], capacity: float) -> list[int]:
    """Greedily move layers to dearer options while the exact total still fits `capacity`,
    each time taking the move that removes the most damage per unit of cost added (moves that
    remove none too, largest first, so the budget is spent rather than overshot)."""
    chosen = list(chosen)
    total = sum(layer[i].cost for layer, i in zip(options, chosen, strict=True))
    while True:
        move, best_key = None, (-1.0, 0)
        for layer_index, layer in enumerate(options):
            current = layer[chosen[layer_index]]
            for index, option in enumerate(layer):
                added = option.cost - current.cost
                gain = current.damage - option.damage
                if added <= 0 or gain < 0 or total + added > capacity:
                    continue
                key = (gain / added, added)
                if key > best_key:
                    move, best_key = (layer_index, index, added), key
        if move is None:
            return chosen
        layer_index, index, added = move
        chosen[layer_index] = index
        total += added
