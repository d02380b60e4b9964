"""Decide, per layer, how to factorize it (or why to leave it dense)."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from ht2.choices import METHODS
from ht2.layers import LinearSpec, UnsupportedLayer, effective_layer

# The handler each method names for k x k convs; "svd" there is spatial SVD (Tucker-1 stays
# the treatment of the first conv and 1x1 convs, SVD that of Linear layers, whatever the method).
KXK_HANDLERS = {"ht2": "ht2", "tucker2": "tucker2", "cp": "cp", "svd": "spatial_svd"}


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

    `method` is one of METHODS; for k x k convs it names the handler in KXK_HANDLERS. A
    subclass of Conv2d/Linear is judged by the plain layer its forward computes like
    (ht2.layers.effective), and stays dense, with the reason, where there is none.
    """
    if method not in KXK_HANDLERS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
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
    return Decision(KXK_HANDLERS[method])


def matches(name: str, include: list[str] | None, exclude: list[str] | None) -> str:
    """Empty string when `name` passes the include/exclude globs, else the reason it does not."""
    if include and not any(fnmatchcase(name, pattern) for pattern in include):
        return "not matched by --include"
    if exclude and any(fnmatchcase(name, pattern) for pattern in exclude):
        return "matched by --exclude"
    return ""
