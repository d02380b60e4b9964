"""JSON-friendly descriptions of the dense layers that factorized modules replace."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

Pair = tuple[int, int]


def _pair(value: Any) -> Pair:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


@dataclass(frozen=True)
class ConvSpec:
    """Every hyper-parameter of an nn.Conv2d that shapes its output."""

    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair
    padding: Pair | str
    dilation: Pair
    groups: int
    bias: bool
    padding_mode: str

    @classmethod
    def of(cls, conv: nn.Conv2d) -> ConvSpec:
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
        )

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Conv2d", **asdict(self)}

    def padding_along(self, axis: int) -> Pair | str:
        """Padding for a conv whose kernel spans only `axis` (0: height, 1: width)."""
        if isinstance(self.padding, str):
            return self.padding
        return (self.padding[0], 0) if axis == 0 else (0, self.padding[1])

    def build(self) -> nn.Conv2d:
        """A fresh dense conv with exactly these hyper-parameters."""
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
    """The hyper-parameters of an nn.Linear."""

    in_features: int
    out_features: int
    bias: bool

    @classmethod
    def of(cls, linear: nn.Linear) -> LinearSpec:
        return cls(linear.in_features, linear.out_features, linear.bias is not None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearSpec:
        return cls(int(data["in_features"]), int(data["out_features"]), bool(data["bias"]))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Linear", **asdict(self)}

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
