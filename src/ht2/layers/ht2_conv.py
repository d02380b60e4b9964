"""HT-2 convolution: 1x1 (C->R1), D1x1 (R1->R13), 1xD2 (R13->R3), 1x1 (R3->T).

The same factors can also run merged into fewer, larger convolutions (its forms): small
convolutions are dominated by per-call overhead, so fewer kernels can win with more MACs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ht2.decomp import HT2Ranks, ht2_clipped_ranks, ht2_decompose, ht2_unfoldings
from ht2.errors import HT2Error
from ht2.layers.base import FactorizedLayer
from ht2.layers.factor_convs import factor_conv
from ht2.layers.registry import MethodSpec
from ht2.layers.spec import ConvSpec

# Children in the order they run, per form ("dense" is FactorizedLayer.in_form's).
HT2_FORMS = {
    "four": ("reduce", "vertical", "horizontal", "expand"),
    "merged_core": ("reduce", "core", "expand"),  # vertical and horizontal: one D1xD2 conv
    "merged_in": ("reduce_vertical", "horizontal", "expand"),  # reduce and vertical: C->R13
    "two": ("reduce_core", "expand"),  # reduce, vertical, horizontal: one D1xD2 conv C->R3
    "merged_out": ("reduce", "vertical", "expand"),  # horizontal and expand: 1xD2, R13->T
    "outer": ("reduce_vertical", "expand"),  # D1x1 C->R13, then 1xD2 R13->T: two passes
}
WIDE_EXPAND = ("merged_out", "outer")  # forms whose expand spans the width (R13->T, 1xD2)


def _children(spec: ConvSpec, r: HT2Ranks, form: str) -> dict[str, nn.Conv2d]:
    """The convolutions of `form` before `expand`, by name, in the order they run."""
    c = spec.in_channels
    if form == "four":
        return {
            "reduce": factor_conv(spec, c, r.r1, "none"),
            "vertical": factor_conv(spec, r.r1, r.r13, "height"),
            "horizontal": factor_conv(spec, r.r13, r.r3, "width"),
        }
    if form == "merged_core":
        return {
            "reduce": factor_conv(spec, c, r.r1, "none"),
            "core": factor_conv(spec, r.r1, r.r3, "both"),
        }
    if form == "merged_in":
        return {
            "reduce_vertical": factor_conv(spec, c, r.r13, "height"),
            "horizontal": factor_conv(spec, r.r13, r.r3, "width"),
        }
    if form == "merged_out":
        return {
            "reduce": factor_conv(spec, c, r.r1, "none"),
            "vertical": factor_conv(spec, r.r1, r.r13, "height"),
        }
    if form == "outer":
        return {"reduce_vertical": factor_conv(spec, c, r.r13, "height")}
    return {"reduce_core": factor_conv(spec, c, r.r3, "both")}


def _expand(spec: ConvSpec, r: HT2Ranks, form: str) -> nn.Conv2d:
    """The last conv: 1x1 R3->T, or 1xD2 R13->T where horizontal is merged into it."""
    if form in WIDE_EXPAND:
        return factor_conv(spec, r.r13, spec.out_channels, "width", bias=spec.bias)
    return factor_conv(spec, r.r3, spec.out_channels, "none", bias=spec.bias)


class HT2Conv2d(FactorizedLayer):
    """The four convolutions of the hierarchical Tucker-2 decomposition of one conv.

    Stride, dilation and padding of each spatial axis go to the conv that spans that axis;
    padding modes act per axis, so they stay exact too. `form` picks how the factors run
    (HT2_FORMS); every form computes the same function (up to float rounding), because
    padding commutes with 1x1 channel mixing and the vertical conv acts column by column.
    """

    method = "ht2"
    default_form = "four"
    forms = tuple(HT2_FORMS)

    def __init__(
        self,
        spec: ConvSpec,
        ranks: HT2Ranks,
        energy: float | None = None,
        form: str = "four",
    ):
        if spec.groups != 1:
            raise ValueError(f"HT-2 needs groups=1, got groups={spec.groups}")
        if form not in HT2_FORMS:
            raise HT2Error(f"unknown HT-2 form {form!r}; choose one of {', '.join(HT2_FORMS)}")
        super().__init__(spec, ranks.as_dict(), energy)
        self.form = form
        for name, conv in _children(spec, ranks, form).items():
            self.add_module(name, conv)
        self.expand = _expand(spec, ranks, form)

    @classmethod
    def from_dense(
        cls,
        conv: nn.Conv2d,
        energy: float | None = None,
        ranks: HT2Ranks | None = None,
        sweeps: int = 0,
    ) -> HT2Conv2d:
        """Decompose `conv` (ranks from `energy`, or given; `sweeps` ALS rounds after the
        paper's truncation) and copy the factors in."""
        factors = ht2_decompose(conv.weight, energy=energy, ranks=ranks, sweeps=sweeps)
        layer = cls(ConvSpec.of(conv), factors.ranks, energy)
        layer.rel_error = factors.rel_error
        with torch.no_grad():
            layer.reduce.weight.copy_(factors.u1.T[:, :, None, None])
            layer.vertical.weight.copy_(factors.g1.permute(2, 0, 1)[..., None])
            layer.horizontal.weight.copy_(factors.g2.permute(1, 0, 2)[:, :, None, :])
            layer.expand.weight.copy_(factors.u3[:, :, None, None])
        return layer.adopt_bias_and_device(conv)

    def in_form(self, form: str) -> nn.Module:
        """This layer running as `form` (same function, new module); from the four-conv form."""
        if form == self.form:
            return self
        if form not in HT2_FORMS or self.form != "four":
            return super().in_form(form)
        ranks = HT2Ranks(self.ranks["r1"], self.ranks["r13"], self.ranks["r3"])
        merged = HT2Conv2d(self.spec, ranks, self.energy, form=form)
        merged.rel_error = self.rel_error
        merged.to(device=self.expand.weight.device, dtype=self.expand.weight.dtype)
        if form in WIDE_EXPAND:
            merged.expand = self._wide_expand()
        else:
            merged.expand = copy.deepcopy(self.expand)  # with any BatchNorm folded into it
        with torch.no_grad():
            if form == "merged_core":
                merged.reduce.weight.copy_(self.reduce.weight)
                merged.core.weight.copy_(self._core_weight())
            elif form == "two":
                u1 = self.reduce.weight[:, :, 0, 0]
                merged.reduce_core.weight.copy_(
                    torch.einsum("ac,bahw->bchw", u1, self._core_weight())
                )
            elif form == "merged_out":
                merged.reduce.weight.copy_(self.reduce.weight)
                merged.vertical.weight.copy_(self.vertical.weight)
            elif form == "outer":
                merged.reduce_vertical.weight.copy_(self._reduce_vertical_weight())
            else:
                merged.horizontal.weight.copy_(self.horizontal.weight)
                merged.reduce_vertical.weight.copy_(self._reduce_vertical_weight())
        return merged.train(self.training)

    def _wide_expand(self) -> nn.Conv2d:
        """horizontal then expand as one 1xD2 (R13->T) conv, with expand's bias (and any
        BatchNorm folded into it)."""
        conv = factor_conv(
            self.spec, self.ranks["r13"], self.spec.out_channels, "width", bias=False
        )
        conv.to(device=self.expand.weight.device, dtype=self.expand.weight.dtype)
        u3 = self.expand.weight[:, :, 0, 0]  # (T, R3)
        g2 = self.horizontal.weight[:, :, 0, :]  # (R3, R13, D2)
        with torch.no_grad():
            conv.weight.copy_(torch.einsum("tb,bkw->tkw", u3, g2)[:, :, None, :])
        if self.expand.bias is not None:
            conv.bias = nn.Parameter(self.expand.bias.detach().clone())
        return conv

    def _core_weight(self) -> torch.Tensor:
        """The D1xD2 (R1->R3) kernel of vertical then horizontal (four-conv form)."""
        g1 = self.vertical.weight[..., 0]  # (R13, R1, D1)
        g2 = self.horizontal.weight[:, :, 0, :]  # (R3, R13, D2)
        return torch.einsum("kah,bkw->bahw", g1, g2)

    def _reduce_vertical_weight(self) -> torch.Tensor:
        """The D1x1 (C->R13) kernel of reduce then vertical (four-conv form)."""
        u1 = self.reduce.weight[:, :, 0, 0]  # (R1, C)
        g1 = self.vertical.weight[..., 0]  # (R13, R1, D1)
        return torch.einsum("ac,kah->kch", u1, g1)[..., None]

    def dense_weight(self) -> torch.Tensor:
        if self.form in WIDE_EXPAND:
            wide = self.expand.weight[:, :, 0, :]  # (T, R13, D2)
            if self.form == "outer":
                left = self.reduce_vertical.weight[..., 0]  # (R13, C, D1)
            else:
                left = torch.einsum(
                    "ac,kah->kch", self.reduce.weight[:, :, 0, 0], self.vertical.weight[..., 0]
                )
            return torch.einsum("kch,tkw->tchw", left, wide)
        u3 = self.expand.weight[:, :, 0, 0]
        if self.form == "two":
            return torch.einsum("bchw,tb->tchw", self.reduce_core.weight, u3)
        if self.form == "merged_core":
            u1 = self.reduce.weight[:, :, 0, 0]
            return torch.einsum("ac,bahw,tb->tchw", u1, self.core.weight, u3)
        right = torch.einsum("bkw,tb->ktw", self.horizontal.weight[:, :, 0, :], u3)
        if self.form == "merged_in":
            return torch.einsum("kch,ktw->tchw", self.reduce_vertical.weight[..., 0], right)
        u1 = self.reduce.weight[:, :, 0, 0]
        left = torch.einsum("ac,kah->chk", u1, self.vertical.weight[..., 0])
        return torch.einsum("chk,ktw->tchw", left, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad_input(x)
        for name in HT2_FORMS[self.form]:
            x = self._modules[name](x)
        return x


def _typed_ranks(ranks: Mapping[str, int]) -> dict[str, Any]:
    return {"ranks": HT2Ranks(int(ranks["r1"]), int(ranks["r13"]), int(ranks["r3"]))}


def _clip(ranks: Mapping[str, int], shape: Sequence[int]) -> dict[str, int]:
    return ht2_clipped_ranks(HT2Ranks(ranks["r1"], ranks["r13"], ranks["r3"]), shape).as_dict()


def _bounds(spec: ConvSpec, ranks: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    """r1 <= min(C, D1 T D2), r3 <= min(T, C D1 D2), r13 <= min(r1 D1, r3 D2)."""
    t, c = spec.out_channels, spec.in_channels
    d1, d2 = spec.kernel_size
    r1, r3 = ranks["r1"], ranks["r3"]
    return {
        "r1": (min(c, d1 * t * d2), f"min(C, D1 T D2) with C={c}, T={t}, D={d1}x{d2}"),
        "r3": (min(t, c * d1 * d2), f"min(T, C D1 D2) with C={c}, T={t}, D={d1}x{d2}"),
        "r13": (min(r1 * d1, r3 * d2), f"min(r1 D1, r3 D2) with r1={r1}, r3={r3}"),
    }


METHOD = MethodSpec(
    title="HT-2",
    layers={"Conv2d": HT2Conv2d},
    rank_keys=("r1", "r13", "r3"),
    clip=_clip,
    bounds=_bounds,
    typed_ranks=_typed_ranks,
    unfoldings=ht2_unfoldings,
    refinable=True,
)
