"""Wall-clock latency: models timed in turn on one input, so machine noise hits them alike."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.layers import FactorizedLayer
from ht2.metrics.counting import layer_macs
from ht2.metrics.observe import observe

Runnable = Callable[[torch.Tensor], Any]


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call of one model over the timed runs, and their summary."""

    times_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def q1_ms(self) -> float:
        return self._quartiles()[0]

    @property
    def q3_ms(self) -> float:
        return self._quartiles()[2]

    @property
    def iqr_ms(self) -> float:
        """Interquartile range: the spread of the middle half of the runs."""
        return self.q3_ms - self.q1_ms

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def max_ms(self) -> float:
        return max(self.times_ms)

    def _quartiles(self) -> tuple[float, float, float]:
        if len(self.times_ms) < 2:
            only = self.times_ms[0]
            return only, only, only
        q1, q2, q3 = statistics.quantiles(self.times_ms, n=4, method="inclusive")
        return q1, q2, q3


@contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op CPU threads (None: leave PyTorch's setting)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise HT2Error(f"the number of threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _synchronize(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def _timed_call(model: Runnable, x: torch.Tensor) -> float:
    _synchronize(x)
    start = time.perf_counter()
    model(x)
    _synchronize(x)
    return (time.perf_counter() - start) * 1000.0


def time_models(
    models: Sequence[Runnable],
    example_input: torch.Tensor,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> list[Timing]:
    """Time each model on `example_input`, alternating A, B, A, B, ... after warm-up rounds.

    Alternating run by run spreads slow spells of a shared machine over every model alike, so
    their ratio is fairer than timing one model after the other. Runs use inference mode and
    wait for the GPU (torch.cuda.synchronize) around each timed call on CUDA inputs. Models
    should be in eval mode and on the input's device. Returns one Timing per model, in order.
    """
    if not models:
        raise HT2Error("nothing to time: give at least one model")
    if repeats < 1:
        raise HT2Error(f"repeats must be at least 1, got {repeats}")
    if warmup < 0:
        raise HT2Error(f"warm-up runs must be 0 or more, got {warmup}")
    times: list[list[float]] = [[] for _ in models]
    with num_threads(threads), torch.inference_mode():
        for _ in range(warmup):
            for model in models:
                model(example_input)
        for _ in range(repeats):
            for index, model in enumerate(models):
                times[index].append(_timed_call(model, example_input))
    return [Timing(tuple(runs)) for runs in times]


def factorized_layers(model: nn.Module) -> list[tuple[str, FactorizedLayer]]:
    """Every factorized layer of `model` by qualified name, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, FactorizedLayer)]


def layer_input_shapes(model: nn.Module, example_input: torch.Tensor) -> dict[str, torch.Size]:
    """The input shape each factorized layer sees in `model(example_input)` (first call)."""
    shapes: dict[str, torch.Size] = {}

    def hook_for(name: str):
        def hook(module, args):
            shapes.setdefault(name, args[0].shape)

        return hook

    hooks = [(layer, hook_for(name)) for name, layer in factorized_layers(model)]
    observe(model, example_input, hooks, before=True)
    return shapes


@dataclass(frozen=True)
class LayerTiming:
    """One factorized layer timed against its dense original on the input it sees."""

    name: str
    method: str
    ranks: dict[str, int]
    input_shape: tuple[int, ...]
    dense: Timing
    factorized: Timing
    macs_dense: int
    macs_factorized: int

    @property
    def speedup(self) -> float:
        """Dense time over factorized time: above 1, the factorization pays off."""
        return self.dense.median_ms / max(self.factorized.median_ms, 1e-12)

    @property
    def mac_reduction(self) -> float:
        """Dense MACs over factorized MACs, per sample."""
        return self.macs_dense / max(self.macs_factorized, 1)


def time_layers(
    model: nn.Module,
    example_input: torch.Tensor,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    dtype: str = "float32",
    channels_last: bool = False,
) -> list[LayerTiming]:
    """Time every factorized layer against its `to_dense()` original, alternating the two.

    Each pair runs on a random tensor of the shape that layer receives when `model` runs on
    `example_input` (found by forward hooks); layers that do not run are left out. Both run
    eagerly in `dtype` (bfloat16: under autocast) and, with `channels_last`, in that format.
    """
    from ht2.metrics.treatment import Treated

    shapes = layer_input_shapes(model, example_input)
    results = []
    for name, layer in factorized_layers(model):
        if name not in shapes:
            continue
        pair = [layer.to_dense().eval(), copy.deepcopy(layer).eval()]
        if channels_last and len(shapes[name]) == 4:
            pair = [m.to(memory_format=torch.channels_last) for m in pair]
        x = torch.randn(shapes[name], device=example_input.device, dtype=example_input.dtype)
        treated = [Treated(m, dtype, channels_last) for m in pair]
        dense_time, factorized_time = time_models(treated, x, repeats, warmup, threads)
        dense = pair[0]
        one = x[:1]
        results.append(
            LayerTiming(
                name=name,
                method=layer.method,
                ranks=dict(layer.ranks),
                input_shape=tuple(x.shape),
                dense=dense_time,
                factorized=factorized_time,
                macs_dense=sum(layer_macs(dense, one).values()),
                macs_factorized=sum(layer_macs(layer, one).values()),
            )
        )
    return results
