"""Weights fit to decompose: finite, and within float64's range of squares.

A NaN or Inf weight has no factors, and a decomposition would only spread it (or fail deep in
LAPACK); it is refused up front with the layer's name. Any scale float32 can hold decomposes
(the math divides by a power of two first); a float64 weight beyond 1e150 is refused, as its
squared norm would overflow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ht2.decomp.threads import sized_by_first
from ht2.errors import HT2Error

_LARGEST = 1e150


def check_finite(chosen: Iterable[tuple[str, nn.Module, str]]) -> None:
    """Refuse, naming the layer, any of the (name, module, method) about to be decomposed whose
    weight or bias holds NaN or Inf, or values too large to decompose."""
    for name, module, _method in chosen:
        for kind in ("weight", "bias"):
            tensor = getattr(module, kind, None)
            if isinstance(tensor, torch.Tensor):
                problem = _problem(tensor.detach())
                if problem:
                    raise HT2Error(
                        f"layer {name!r} has {problem} in its {kind}: it cannot be decomposed; "
                        "check the weights file (a diverged training run?)"
                    )


@sized_by_first
def _problem(tensor: torch.Tensor) -> str | None:
    if tensor.numel() == 0 or tensor.is_meta:
        return None
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        nan = int(torch.isnan(tensor).sum())
        inf = int((~finite).sum()) - nan
        return ", ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)
    peak = float(tensor.abs().max())
    if peak > _LARGEST:
        return f"entries as large as {peak:.3g} (above {_LARGEST:.0e})"
    return None


@contextlib.contextmanager
def decomposing(name: str) -> Iterator[None]:
    """Turn a linear-algebra failure while decomposing layer `name` into one HT2Error line."""
    try:
        yield
    except torch.linalg.LinAlgError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise HT2Error(
            f"decomposing layer {name!r} failed ({first}); exclude it with exclude "
            f"{name!r} or check its weights",
            params="exclude",
        ) from None
