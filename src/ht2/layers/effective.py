"""The plain layer a Conv2d or Linear subclass stands for: what its forward really computes.

Models subclass nn.Conv2d and nn.Linear: timm's Conv2dSame pads 'same' for each input size,
StdConv2d and ScaledStdConv2d standardise their weight inside forward, timm's Linear only
casts. Factorizing such a layer by its raw `weight` would change what it computes, so each
one is first turned into the plain layer (nn.Conv2d, SamePadConv2d or nn.Linear) that
computes the same function, and that is what gets factorized.

- A subclass that keeps nn.Conv2d's / nn.Linear's forward is plain (a parametrized weight,
  such as weight norm, is read as it is computed).
- timm's classes are read by the recipe of their forward, recognised by module and class
  name (timm is optional), so their spec needs no run; their weight is checked on a probe.
- Any other forward is run once on a small random probe while its conv2d / linear call is
  recorded: the weight and bias it passes are the effective ones. They are accepted only
  where a plain layer with them (for a conv: padded as the layer's own attributes say, or
  'same' for the input's size) gives the forward's output on a second probe.
Whatever fails is refused (UnsupportedLayer) with the reason; the policy leaves it dense.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode

from ht2.errors import HT2Error
from ht2.layers.padding import SamePadConv2d
from ht2.layers.spec import ConvSpec, LinearSpec

PLAIN_TYPES = (nn.Conv2d, nn.Linear, SamePadConv2d)
_PROBE_SEED = 20240607


class UnsupportedLayer(HT2Error):
    """A layer that no plain Conv2d/Linear reproduces; the message says why."""


@dataclass(frozen=True)
class EffectiveLayer:
    """A plain layer computing what the original computes, and its spec (flags included)."""

    dense: nn.Conv2d | nn.Linear
    spec: ConvSpec | LinearSpec


def _own_weight(module: nn.Module) -> torch.Tensor:
    return module.weight


def _own_bias(module: nn.Module) -> torch.Tensor | None:
    return module.bias


@dataclass(frozen=True)
class _Recipe:
    """How a layer computes: its weight and bias from the module, 'same' padding of the
    input first, and whether the weight is derived rather than the stored parameter."""

    weight: Callable[[nn.Module], torch.Tensor] = _own_weight
    bias: Callable[[nn.Module], torch.Tensor | None] = _own_bias
    pad_same: bool = False
    derived: bool = False


def _standardised(module: nn.Module) -> torch.Tensor:
    """Each output channel's weights to zero mean and unit variance, as timm's StdConv2d."""
    flat = module.weight.reshape(1, module.out_channels, -1)
    standard = F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=module.eps)
    return standard.reshape_as(module.weight)


def _scaled_standardised(module: nn.Module) -> torch.Tensor:
    """Standardised, then times gain * scale per output channel, as timm's ScaledStdConv2d."""
    flat = module.weight.reshape(1, module.out_channels, -1)
    gain = (module.gain * module.scale).view(-1)
    standard = F.batch_norm(
        flat, None, None, weight=gain, training=True, momentum=0.0, eps=module.eps
    )
    return standard.reshape_as(module.weight)


# timm's subclasses by class name: the attributes their forward reads, and its recipe.
_TIMM: dict[str, tuple[tuple[str, ...], Callable[[nn.Module], _Recipe]]] = {
    "Conv2dSame": ((), lambda m: _Recipe(pad_same=True)),
    "StdConv2d": (("eps",), lambda m: _Recipe(_standardised, derived=True)),
    "StdConv2dSame": (
        ("eps", "same_pad"),
        lambda m: _Recipe(_standardised, pad_same=bool(m.same_pad), derived=True),
    ),
    "ScaledStdConv2d": (
        ("eps", "gain", "scale"),
        lambda m: _Recipe(_scaled_standardised, derived=True),
    ),
    "ScaledStdConv2dSame": (
        ("eps", "gain", "scale", "same_pad"),
        lambda m: _Recipe(_scaled_standardised, pad_same=bool(m.same_pad), derived=True),
    ),
    "Linear": ((), lambda m: _Recipe()),
}


def _timm_recipe(module: nn.Module) -> _Recipe | None:
    cls = type(module)
    if cls.__module__.split(".")[0] != "timm" or cls.__name__ not in _TIMM:
        return None
    needs, recipe = _TIMM[cls.__name__]
    if not all(hasattr(module, name) for name in needs):
        return None
    return recipe(module)


def _base(module: nn.Module) -> type[nn.Module]:
    return nn.Linear if isinstance(module, nn.Linear) else nn.Conv2d


def _overrides_forward(module: nn.Module) -> bool:
    """Whether the class replaced the forward of the nn.Conv2d / nn.Linear it inherits."""
    cls, base = type(module), _base(module)
    if cls.forward is not base.forward:
        return True
    return base is nn.Conv2d and cls._conv_forward is not nn.Conv2d._conv_forward


def _recipe(module: nn.Module) -> _Recipe:
    """How `module` computes its output; UnsupportedLayer when no plain layer does that."""
    name = type(module).__name__
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        raise UnsupportedLayer(f"{name} is neither a Conv2d nor a Linear")
    if not isinstance(getattr(module, "weight", None), torch.Tensor):
        raise UnsupportedLayer(f"{name} has no weight tensor of its own")
    if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
        raise UnsupportedLayer(f"{name} is not initialised yet: run one forward pass first")
    if isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
        raise UnsupportedLayer(
            f"{name} is the out_proj of a MultiheadAttention, which reads its weight "
            "directly instead of calling it"
        )
    known = _timm_recipe(module)
    if known is not None:
        return known
    if not _overrides_forward(module):
        return _Recipe(derived=parametrize.is_parametrized(module))
    try:
        return _probed_recipe(module)
    except UnsupportedLayer:
        raise
    except Exception as error:  # a forward or state we cannot copy or run on a probe
        raise UnsupportedLayer(
            f"{name} overrides forward and could not be probed ({type(error).__name__})"
        ) from None


def _spec(module: nn.Module, recipe: _Recipe) -> ConvSpec | LinearSpec:
    has_bias = recipe.bias(module) is not None
    if isinstance(module, nn.Linear):
        return replace(LinearSpec.of(module), bias=has_bias, derived_weight=recipe.derived)
    spec = replace(ConvSpec.of(module), bias=has_bias, derived_weight=recipe.derived)
    if recipe.pad_same:
        spec = replace(spec, padding=(0, 0), pad_same=True)
    return spec


def _dense(module: nn.Module, recipe: _Recipe) -> nn.Conv2d | nn.Linear:
    """A plain layer with `module`'s effective weight and bias (copies, no gradient); on the
    meta device, the structure alone."""
    spec = _spec(module, recipe)
    device, dtype = module.weight.device, module.weight.dtype
    with torch.device("meta"):
        dense = spec.build()
    dense = dense.to_empty(device=device).to(dtype)
    if device.type != "meta":
        with torch.no_grad():
            dense.weight.copy_(recipe.weight(module))
            bias = recipe.bias(module)
            if bias is not None:
                dense.bias.copy_(bias)
    return dense.train(module.training)


def effective_spec(module: nn.Module) -> ConvSpec | LinearSpec:
    """The spec of the plain layer `module` computes like (UnsupportedLayer if none does).

    Cheap: nothing runs except an unknown overridden forward (one small probe), so a plan
    can be checked against a model built on the meta device.
    """
    if type(module) in PLAIN_TYPES:
        return ConvSpec.of(module) if isinstance(module, nn.Conv2d) else LinearSpec.of(module)
    return _spec(module, _recipe(module))


def effective_layer(module: nn.Module) -> EffectiveLayer:
    """The plain Conv2d / SamePadConv2d / Linear computing what `module` computes.

    A plain layer is returned as it is; for a subclass, a new one holding its effective
    weight (after standardisation or scaling) and bias. UnsupportedLayer says why there
    is none.
    """
    if type(module) in PLAIN_TYPES:
        return EffectiveLayer(module, effective_spec(module))
    recipe = _recipe(module)
    dense = _dense(module, recipe)
    if _timm_recipe(module) is not None and dense.weight.device.type != "meta":
        probe = _probe_inputs(module)[0]
        if not _same_output(_run(dense, probe), _run(module, probe)):
            raise UnsupportedLayer(
                f"{type(module).__name__} does not compute what ht2 expects of timm's class "
                "of that name (a newer timm?)"
            )
    return EffectiveLayer(dense, _spec(module, recipe))


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight `module` computes with: what spectra and ranks should be read from."""
    return effective_layer(module).dense.weight


class _Recorder(TorchFunctionMode):
    """Records the weight and bias of every call of `function` (F.conv2d or F.linear)."""

    def __init__(self, function: Callable[..., Any]):
        super().__init__()
        self.function = function
        self.calls: list[tuple[Any, Any]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is self.function:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            self.calls.append((weight, bias))
        return func(*args, **kwargs)


def _probed_recipe(module: nn.Module) -> _Recipe:
    """The recipe of an unknown forward: the weight and bias its one conv2d / linear call
    takes, accepted where a plain layer with them matches its output on a second probe."""
    name, kind = type(module).__name__, _base(module).__name__
    subject = _probe_copy(module)
    first, second = _probe_inputs(subject)
    function = F.linear if isinstance(module, nn.Linear) else F.conv2d
    recorder = _Recorder(function)
    with recorder:
        _run(subject, first)
    if len(recorder.calls) != 1:
        raise UnsupportedLayer(
            f"{name} overrides forward and calls {function.__name__} {len(recorder.calls)} "
            f"times, not once as a plain {kind} does"
        )
    weight, bias = recorder.calls[0]
    if not isinstance(weight, torch.Tensor) or weight.shape != subject.weight.shape:
        raise UnsupportedLayer(f"{name} overrides forward with a weight of another shape")
    weight = weight.detach()
    bias = bias.detach() if isinstance(bias, torch.Tensor) else None
    derived = (
        weight.data_ptr() != subject.weight.data_ptr()
        or (bias is None) != (subject.bias is None)
        or (bias is not None and bias.data_ptr() != subject.bias.data_ptr())
        or parametrize.is_parametrized(module)
    )
    expected = _run(subject, second)
    for pad_same in (False, True) if kind == "Conv2d" else (False,):
        recipe = _Recipe(lambda m: weight, lambda m: bias, pad_same=pad_same, derived=derived)
        if _same_output(_run(_dense(subject, recipe), second), expected):
            return recipe
    raise UnsupportedLayer(
        f"{name} overrides forward, and its output is not that of a plain {kind}"
    )


def _probe_copy(module: nn.Module) -> nn.Module:
    """A copy to run (a forward may change state); from the meta device, with random values."""
    subject = copy.deepcopy(module)
    if module.weight.device.type != "meta":
        return subject
    subject = subject.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    with torch.no_grad():
        for tensor in (*subject.parameters(), *subject.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return subject


def _probe_inputs(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Two small random inputs: for a conv, a few output positions per axis, one side odd
    and the other even, so that asymmetric 'same' padding shows."""
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    if isinstance(module, nn.Linear):
        shape: tuple[int, ...] = (3, module.in_features)
    else:
        pads = (0, 0) if isinstance(module.padding, str) else module.padding
        sides = [
            dilation * (kernel - 1) + 1 + pad + 2 * stride + extra
            for kernel, stride, dilation, pad, extra in zip(
                module.kernel_size, module.stride, module.dilation, pads, (1, 2), strict=True
            )
        ]
        shape = (2, module.in_channels, *sides)
    like = module.weight
    first, second = (torch.randn(shape, generator=generator) for _ in range(2))
    return first.to(like), second.to(like)


def _run(module: nn.Module, probe: torch.Tensor) -> torch.Tensor:
    """`module`'s forward on `probe`, without its hooks (they belong to the model's run)."""
    try:
        with torch.no_grad():
            return module.forward(probe)
    except Exception as error:  # any failure of a foreign forward means: cannot tell
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UnsupportedLayer(
            f"{type(module).__name__}'s forward failed on a small probe input ({message})"
        ) from None


def _same_output(actual: Any, expected: torch.Tensor) -> bool:
    """Equal shapes and a relative difference within float rounding (sqrt of epsilon)."""
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    tolerance = torch.finfo(expected.dtype).eps ** 0.5
    difference = torch.linalg.vector_norm((actual - expected).double())
    return bool(difference <= tolerance * torch.linalg.vector_norm(expected.double()))
