"""The convolutions every factorized conv is chained from, built one way.

Each factor's kernel spans some axes of the original kernel and takes the original stride,
padding, dilation and padding mode along exactly those axes, so the chain stays exact for any
geometry; a factor spanning no axis is a plain 1x1 channel mix.
"""

from __future__ import annotations

from torch import nn

from ht2.layers.spec import ConvSpec

SPANS = {"none": (), "height": (0,), "width": (1,), "both": (0, 1)}


def factor_conv(
    spec: ConvSpec, cin: int, cout: int, span: str, groups: int = 1, bias: bool = False
) -> nn.Conv2d:
    """A `cin` -> `cout` conv whose kernel spans `span` of `spec`'s: "both" (D1xD2),
    "height" (D1x1), "width" (1xD2) or "none" (1x1)."""
    axes = SPANS[span]
    if not axes:
        return nn.Conv2d(cin, cout, 1, groups=groups, bias=bias)
    padding = spec.padding if len(axes) == 2 else spec.padding_along(axes[0])

    def along(pair: tuple[int, int]) -> tuple[int, int]:
        return (pair[0] if 0 in axes else 1, pair[1] if 1 in axes else 1)

    return nn.Conv2d(
        cin,
        cout,
        along(spec.kernel_size),
        stride=along(spec.stride),
        padding=padding,
        dilation=along(spec.dilation),
        groups=groups,
        bias=bias,
        padding_mode=spec.padding_mode,
    )
