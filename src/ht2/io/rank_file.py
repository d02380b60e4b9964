"""Per-layer ranks from a JSON file: {"layer": {"r1": 8, ...}} or a report.json / ht2.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ht2.errors import BAD_JSON, HT2Error
from ht2.io.names import layer_name_problem
from ht2.layers.registry import method_names


def _from_layer_list(layers: list[Any], path: Path) -> dict[str, dict[str, int]]:
    ranks: dict[str, dict[str, int]] = {}
    for layer in layers:
        if not isinstance(layer, dict) or "name" not in layer:
            raise HT2Error(f"{path}: every entry of its layer list needs a name")
        problem = layer_name_problem(layer["name"])
        if problem:
            raise HT2Error(f"{path}: layer name {problem}")
        method = layer.get("method", "dense")
        if method != "dense" and (not isinstance(method, str) or method not in method_names()):
            raise HT2Error(
                f"{path}: layer {layer['name']!r}: method {method!r} is unknown; known: "
                f"dense, {', '.join(method_names())}"
            )
        if method != "dense" and layer.get("ranks"):
            ranks[layer["name"]] = layer["ranks"]
    return ranks


def read_rank_file(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Ranks by layer name, from a plain mapping or the layers of a report.json / ht2.json plan."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HT2Error(f"ranks file {path} does not exist") from None
    except (OSError, *BAD_JSON) as error:
        raise HT2Error(f"cannot read ranks file {path}: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("layers"), list):
        ranks = _from_layer_list(data["layers"], path)
    elif isinstance(data, dict) and isinstance(data.get("plan"), list):
        ranks = _from_layer_list(data["plan"], path)
    elif isinstance(data, dict):
        ranks = data
    else:
        raise HT2Error(f"{path}: expected a JSON object of layer name -> ranks")
    for name, layer_ranks in ranks.items():
        problem = layer_name_problem(name)
        if problem:
            raise HT2Error(f"{path}: layer name {problem}")
        if not isinstance(layer_ranks, dict):
            raise HT2Error(
                f'{path}: the ranks of layer {name!r} must be an object such as {{"r": 8}}'
            )
    if not ranks:
        raise HT2Error(f"{path} gives no ranks")
    return ranks
