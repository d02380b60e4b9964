"""argparse types for numeric flags: NaN, Inf and out-of-range values fail while parsing.

So `--lr nan` or `--images 0` is a one-line usage error naming the flag and the value, before
any model or data is loaded. Kept free of torch, like the rest of argument parsing.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

HIGHEST = 2**31 - 1  # no count, size or seed of ours is larger; beyond it C code overflows


def whole_number(
    low: int, wanted: str, quote: bool = False, high: int = HIGHEST
) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`, else "expected `wanted`, got TEXT"
    (TEXT in quotes with `quote`, as the wordings users and tests already know have it)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value > high:
            raise argparse.ArgumentTypeError(f"expected at most {high}, got {text}")
        if value < low:
            shown = repr(text) if quote else text
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {shown}")
        return value

    return parse


def real_number(
    low: float, high: float = math.inf, *, above: bool = False, below: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite float in [low, high]; `above`/`below` exclude that end."""
    opening, closing = "(" if above else "[", ")" if below or high == math.inf else "]"
    wanted = f"a finite number in {opening}{low:g}, {high:g}{closing}"
    if high == math.inf:
        wanted = f"a finite number {'>' if above else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = (value > low if above else value >= low) and (
            value < high if below else value <= high
        )
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    return parse


positive_int = whole_number(1, "a positive integer, at least 1")
non_negative_int = whole_number(0, "a whole number >= 0", quote=True)
positive_float = real_number(0.0, above=True)
non_negative_float = real_number(0.0)
fraction = real_number(0.0, 1.0)
below_one = real_number(0.0, 1.0, below=True)
