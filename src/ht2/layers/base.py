"""What every factorized module shares: its spec, its ranks, its plan entry, its forms."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ht2.errors import HT2Error
from ht2.layers.padding import pad_same
from ht2.layers.spec import ConvSpec, LinearSpec

DENSE_FORM = "dense"
# Hyper-parameters of the replaced layer that code around it may read off the module.
_SPEC_ATTRIBUTES = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "padding_mode",
    "in_features",
    "out_features",
)


class FactorizedLayer(nn.Module):
    """A chain of small layers standing in for one dense layer.

    Subclasses set `method`, build their children in __init__ from (spec, ranks) alone, so a
    saved plan can rebuild them without any decomposition, and end with a child named `expand`
    that carries the original bias. A layer runs in one form (how its factors are arranged
    into modules): `default_form` as decomposed, other `forms` where the subclass has them,
    or "dense": the plain dense layer of `to_dense`, which leaves the plan, as it costs what
    the original did. Every form computes the same function up to float rounding.
    Each forward starts with `pad_input`: the dynamic 'same' padding of a spec that has it
    (it commutes with the bias-free channel mixing before the spatial convs).

    Models whose code reads attributes of a layer instead of only calling it (timm's ConViT
    and EdgeNeXt read `weight.device`, DaViT `kernel_size`, an EVA variant calls F.linear on
    `qkv.weight`) keep working: the spec's hyper-parameters, `weight` (the dense weight the
    factors make, a product on every read) and `bias` read as on the replaced layer.
    """

    method: str = ""
    default_form: str = "factors"
    forms: tuple[str, ...] = ()  # forms the subclass can build; empty: the default only

    def __init__(self, spec: ConvSpec | LinearSpec, ranks: dict[str, int], energy: float | None):
        super().__init__()
        self.spec = spec
        self.ranks = dict(ranks)
        self.energy = energy
        self.rel_error: float | None = None
        self.form = self.default_form

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight the factors compute (read-only; a product on every read)."""
        return self.dense_weight()

    @property
    def bias(self) -> torch.Tensor | None:
        """The bias the layer adds (that of `expand`)."""
        return self.expand.bias

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            spec = self.__dict__.get("spec")
            if name in _SPEC_ATTRIBUTES and hasattr(spec, name):
                return getattr(spec, name)
            raise

    def plan_entry(self) -> dict[str, Any]:
        """What a plan needs to rebuild this module's structure (not its weights).

        The form is written only when it is not the default, so older plans read the same.
        """
        entry = {
            "method": self.method,
            "ranks": dict(self.ranks),
            "energy": self.energy,
            "layer": self.spec.to_dict(),
        }
        if self.form != self.default_form:
            entry["form"] = self.form
        return entry

    def available_forms(self) -> tuple[str, ...]:
        """Forms this layer can switch to exactly: all from the default form, else its own
        and dense (the merged factors are not split again). Not dense where the original
        layer derived its weight (a saved dense layer would load into it as a raw weight)."""
        dense = () if self.spec.derived_weight else (DENSE_FORM,)
        if self.form != self.default_form:
            return tuple(dict.fromkeys((self.form, *dense)))
        return (*(self.forms or (self.default_form,)), *dense)

    def in_form(self, form: str) -> nn.Module:
        """This layer running as `form`: itself, or a new module computing the same function
        (for "dense" a plain Conv2d/Linear, keeping a bias BatchNorm folding gave `expand`)."""
        if form == self.form:
            return self
        if form == DENSE_FORM and form in self.available_forms():
            return self._dense_with_bias()
        raise HT2Error(
            f"a {self.method} layer in form {self.form!r} cannot run as {form!r}; "
            f"choose one of {', '.join(self.available_forms())}"
        )

    def adopt_bias_and_device(self, dense: nn.Module) -> FactorizedLayer:
        """Copy `dense`'s bias into the last factor and move to its device: how from_dense ends."""
        if dense.bias is not None:
            with torch.no_grad():
                self.expand.bias.copy_(dense.bias)
        return self.to(dense.weight.device)

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """`x` padded as the original layer padded it before its convolution (TensorFlow
        'same' for the input's size) where the spec says so; else `x` itself."""
        spec = self.spec
        if isinstance(spec, ConvSpec) and spec.pad_same:
            return pad_same(x, spec.kernel_size, spec.stride, spec.dilation)
        return x

    def dense_weight(self) -> torch.Tensor:
        """The dense weight this chain computes (same shape as the original layer's)."""
        raise NotImplementedError

    def to_dense(self) -> nn.Module:
        """A dense layer equal to this chain (up to float rounding)."""
        dense = self.spec.build()
        with torch.no_grad():
            dense.weight.copy_(self.dense_weight())
            if self.spec.bias:
                dense.bias.copy_(self.expand.bias)
        return dense.to(self.expand.weight.device)

    def _dense_with_bias(self) -> nn.Module:
        bias = self.expand.bias  # may exist beyond the spec's: a BatchNorm folded into it
        weight = self.dense_weight()
        dense = replace(self.spec, bias=bias is not None).build().to(weight)
        with torch.no_grad():
            dense.weight.copy_(weight)
            if bias is not None:
                dense.bias.copy_(bias)
        return dense.train(self.training)

    def extra_repr(self) -> str:
        ranks = ", ".join(f"{k}={v}" for k, v in self.ranks.items())
        form = f", form={self.form}" if self.form != self.default_form else ""
        return f"method={self.method}, {ranks}{form}"
