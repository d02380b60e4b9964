"""Decide, per layer, how to factorize it (or why to leave it dense)."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from ht2.choices import METHOD_ALIASES, RenamedWarning
from ht2.errors import HT2Error
from ht2.layers import LinearSpec, UnsupportedLayer, effective_layer
from ht2.layers.registry import kxk_method, kxk_methods

# For k x k convs each user-facing method name means the method (the layer kind a plan
# names) it is registered for in ht2.layers.registry. Tucker-1, whose kind is "svd", stays the
# treatment of the first conv and 1x1 convs, SVD that of Linear layers, whatever the method.


def resolve_method(method: str) -> str:
    """The current name of `method`: a former name (METHOD_ALIASES) warns once with a
    RenamedWarning and gives the new one; an unknown name is an HT2Error.

    The warning names the first line outside ht2 that led here (the user's call), so the
    default warning filter shows it once however many library steps resolve the same name.
    """
    if method in METHOD_ALIASES:
        new = METHOD_ALIASES[method]
        warnings.warn(
            f"method {method!r} for k x k convolutions is now called {new!r}; it works as "
            f"{new!r}, but use the new name, as the old one will go",
            RenamedWarning,
            stacklevel=_outside_ht2(),
        )
        return new
    if method not in kxk_methods():
        raise HT2Error(f"unknown method {method!r}; choose one of {', '.join(kxk_methods())}")
    return method


def _outside_ht2() -> int:
    """The stacklevel, for a warning issued by this function's caller, of the first frame
    whose code is not in the ht2 package."""
    level, frame = 2, sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "ht2":
        level, frame = level + 1, frame.f_back
    return level


@dataclass(frozen=True)
class Decision:
    """A method to apply, or None with the reason the layer stays dense."""

    method: str | None
    reason: str = ""


def is_candidate(module: nn.Module) -> bool:
    """Layers the report lists: every convolution and every Linear."""
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))


def paper_policy(module: nn.Module, is_first_conv: bool, method: str = "ht2") -> Decision:
    """The paper's rule: first and 1x1 convs by SVD, other kxk convs by `method`, Linear by SVD.

    `method` is one of kxk_methods() (or a former name, which warns); for k x k convs it names
    the method registered under it. A subclass of Conv2d/Linear is judged by the plain layer its
    forward computes like (ht2.layers.effective), and stays dense, with the reason, where
    there is none.
    """
    if method not in kxk_methods() and method not in METHOD_ALIASES:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(kxk_methods())}")
    method = resolve_method(method)
    name = type(module).__name__
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return Decision(None, f"{name} is not supported; left dense")
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        return Decision(None, f"{name} is not supported (Conv2d only); left dense")
    if module._forward_hooks or module._forward_pre_hooks:  # weight_norm, spectral_norm too
        return Decision(None, f"{name} has forward hooks, which factors would not run; left dense")
    try:
        spec = effective_layer(module).spec
    except UnsupportedLayer as error:
        return Decision(None, f"{error}; left dense")
    if isinstance(spec, LinearSpec):
        return Decision("svd")
    if spec.groups != 1:
        kind = "depthwise" if spec.groups == spec.in_channels else "grouped"
        return Decision(None, f"{kind} convolution (groups={spec.groups}) is left dense")
    if is_first_conv or spec.kernel_size == (1, 1):
        return Decision("svd")
    return Decision(kxk_method(method))


def matches(name: str, include: list[str] | None, exclude: list[str] | None) -> str:
    """Empty string when `name` passes the include/exclude globs, else the reason it does not."""
    if include and not any(fnmatchcase(name, pattern) for pattern in include):
        return "not matched by --include"
    if exclude and any(fnmatchcase(name, pattern) for pattern in exclude):
        return "matched by --exclude"
    return ""
