"""Parameters and MACs a factorized layer would have, without decomposing anything."""

from __future__ import annotations

from functools import lru_cache

import torch

from ht2.layers import build_factorized
from ht2.layers.spec import ConvSpec, LinearSpec
from ht2.metrics import count_params, layer_macs


@lru_cache(maxsize=65536)
def _cost(
    method: str,
    spec: ConvSpec | LinearSpec,
    ranks: tuple[tuple[str, int], ...],
    input_shape: tuple[int, ...] | None,
) -> tuple[int, int | None]:
    entry = {"method": method, "ranks": dict(ranks), "layer": spec.to_dict()}
    with torch.device("meta"):
        module = build_factorized(entry)
    params = count_params(module)
    if input_shape is None:
        return params, None
    example = torch.empty(input_shape, device="meta")
    return params, sum(layer_macs(module, example).values())


def factorized_cost(
    method: str,
    spec: ConvSpec | LinearSpec,
    ranks: dict[str, int],
    input_shape: tuple[int, ...] | None = None,
) -> tuple[int, int | None]:
    """(params, MACs per sample) of the `method` factorization of `spec` at `ranks`.

    The module is built on the meta device, so it costs no memory and no arithmetic;
    MACs need the layer's input shape (batch 1) and are None without it.
    """
    return _cost(method, spec, tuple(sorted(ranks.items())), input_shape)
