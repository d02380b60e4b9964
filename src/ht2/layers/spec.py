"""JSON-friendly descriptions of the dense layers that factorized modules replace."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from ht2.layers.padding import SamePadConv2d

Pair = tuple[int, int]


def _pair(value: Any) -> Pair:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


_FLAGS = ("pad_same", "derived_weight")


def _to_dict(kind: str, spec: ConvSpec | LinearSpec) -> dict[str, Any]:
    """`spec` as a plan's "layer": its flags only when set, so plain layers read as before."""
    fields = {key: value for key, value in asdict(spec).items() if key not in _FLAGS or value}
    return {"type": kind, **fields}


@dataclass(frozen=True)
class ConvSpec:
    """Every hyper-parameter of an nn.Conv2d that shapes its output.

    `pad_same`: the input is first padded like TensorFlow's 'SAME' for its own size
    (`padding` is then 0), as timm's Conv2dSame does. `derived_weight`: the original layer
    computed its weight from its parameters (weight standardisation), so a plain conv with
    the effective weight cannot be loaded back into it.
    """

    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair
    padding: Pair | str
    dilation: Pair
    groups: int
    bias: bool
    padding_mode: str
    pad_same: bool = False
    derived_weight: bool = False

    @classmethod
    def of(cls, conv: nn.Conv2d) -> ConvSpec:
        """The spec of a plain conv's own attributes (and of a SamePadConv2d)."""
        padding = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
        return cls(
            conv.in_channels,
            conv.out_channels,
            _pair(conv.kernel_size),
            _pair(conv.stride),
            padding,
            _pair(conv.dilation),
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            pad_same=isinstance(conv, SamePadConv2d),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConvSpec:
        padding = data["padding"]
        return cls(
            int(data["in_channels"]),
            int(data["out_channels"]),
            _pair(data["kernel_size"]),
            _pair(data["stride"]),
            padding if isinstance(padding, str) else _pair(padding),
            _pair(data["dilation"]),
            int(data["groups"]),
            bool(data["bias"]),
            str(data["padding_mode"]),
            pad_same=bool(data.get("pad_same", False)),
            derived_weight=bool(data.get("derived_weight", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return _to_dict("Conv2d", self)

    def padding_along(self, axis: int) -> Pair | str:
        """Padding for a conv whose kernel spans only `axis` (0: height, 1: width)."""
        if isinstance(self.padding, str):
            return self.padding
        return (self.padding[0], 0) if axis == 0 else (0, self.padding[1])

    def build(self) -> nn.Conv2d:
        """A fresh dense conv with exactly these hyper-parameters (a SamePadConv2d when the
        input is padded dynamically)."""
        if self.pad_same:
            return SamePadConv2d(
                self.in_channels,
                self.out_channels,
                self.kernel_size,
                stride=self.stride,
                dilation=self.dilation,
                groups=self.groups,
                bias=self.bias,
                padding_mode=self.padding_mode,
            )
        return nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias,
            padding_mode=self.padding_mode,
        )

    def weight_count(self) -> int:
        kh, kw = self.kernel_size
        per_out = self.in_channels // self.groups * kh * kw
        return self.out_channels * per_out + (self.out_channels if self.bias else 0)


@dataclass(frozen=True)
class LinearSpec:
    """The hyper-parameters of an nn.Linear (`derived_weight` as in ConvSpec)."""

    in_features: int
    out_features: int
    bias: bool
    derived_weight: bool = False

    @classmethod
    def of(cls, linear: nn.Linear) -> LinearSpec:
        return cls(linear.in_features, linear.out_features, linear.bias is not None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearSpec:
        return cls(
            int(data["in_features"]),
            int(data["out_features"]),
            bool(data["bias"]),
            derived_weight=bool(data.get("derived_weight", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return _to_dict("Linear", self)

    def build(self) -> nn.Linear:
        return nn.Linear(self.in_features, self.out_features, bias=self.bias)

    def weight_count(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


def spec_from_dict(data: dict[str, Any]) -> ConvSpec | LinearSpec:
    """Read a spec written by `to_dict`, dispatching on its "type"."""
    kind = data.get("type")
    if kind == "Conv2d":
        return ConvSpec.from_dict(data)
    if kind == "Linear":
        return LinearSpec.from_dict(data)
    raise ValueError(f"unknown layer type {kind!r} in plan")
