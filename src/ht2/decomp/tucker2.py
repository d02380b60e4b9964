"""Tucker-2 of a 4-D convolution kernel on its two channel modes, as in Kim et al. (2016)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ht2.decomp.basis import normalized, spectrum, times_power_of_two, working_dtype
from ht2.decomp.threads import sized_by_first


@dataclass(frozen=True)
class Tucker2Ranks:
    """The two Tucker-2 ranks: input channels (r_in) and output channels (r_out)."""

    r_in: int
    r_out: int

    def as_dict(self) -> dict[str, int]:
        return {"r_in": self.r_in, "r_out": self.r_out}


@dataclass(frozen=True)
class Tucker2Factors:
    """W[t, c, h, w] ~= sum U_out[t, o] G[o, i, h, w] U_in[c, i]."""

    u_in: torch.Tensor  # C x R_in
    core: torch.Tensor  # R_out x R_in x D1 x D2
    u_out: torch.Tensor  # T x R_out
    ranks: Tucker2Ranks
    rel_error: float


def _out_unfolding(kernel: torch.Tensor) -> torch.Tensor:
    """Mode-0 unfolding: T x (C D1 D2)."""
    return kernel.reshape(kernel.shape[0], -1)


def _in_unfolding(kernel: torch.Tensor) -> torch.Tensor:
    """Mode-1 unfolding: C x (T D1 D2)."""
    return kernel.transpose(0, 1).reshape(kernel.shape[1], -1)


def tucker2_clipped_ranks(ranks: Tucker2Ranks, shape: Sequence[int]) -> Tucker2Ranks:
    """The ranks a Tucker-2 of a kernel of `shape` uses: no larger than its unfoldings (and each
    other's projections) allow."""
    t, c, d1, d2 = shape
    r_in = max(1, min(ranks.r_in, c, t * d1 * d2))
    r_out = max(1, min(ranks.r_out, t, c * d1 * d2))
    r_in = min(r_in, r_out * d1 * d2)
    r_out = min(r_out, r_in * d1 * d2)
    return Tucker2Ranks(r_in, r_out)


def tucker2_reconstruct(factors: Tucker2Factors) -> torch.Tensor:
    """The dense kernel (T x C x D1 x D2) that the factors stand for."""
    return torch.einsum("to,oihw,ci->tchw", factors.u_out, factors.core, factors.u_in)


@sized_by_first
def tucker2_decompose(
    kernel: torch.Tensor,
    energy: float | None = None,
    ranks: Tucker2Ranks | None = None,
    hooi_sweeps: int = 0,
) -> Tucker2Factors:
    """Tucker-2 of a T x C x D1 x D2 kernel with ranks from `energy` or given explicitly.

    U_in and U_out are the leading left singular vectors of the mode-1 and mode-0 unfoldings
    (HOSVD), each rank by the energy rule on its own unfolding; `hooi_sweeps` rounds of
    higher-order orthogonal iteration then refine them in turn. The core is the kernel
    projected on both. Float32 kernels are decomposed in float32 (ranks still by the exact
    rule, see `spectrum`), others in float64; returned in the kernel's dtype. The work is
    done on the kernel divided by a power of two near its largest entry, which the core takes
    back at the end, so any scale decomposes alike.
    """
    if kernel.dim() != 4:
        raise ValueError(f"Tucker-2 needs a 4-D kernel, got shape {tuple(kernel.shape)}")
    if (energy is None) == (ranks is None):
        raise ValueError("give exactly one of energy or ranks")
    if hooi_sweeps < 0:
        raise ValueError(f"hooi_sweeps must be >= 0, got {hooi_sweeps}")
    k, exponent = normalized(kernel.detach().to(working_dtype(kernel)))
    into = spectrum(_in_unfolding(k), energy)
    out = spectrum(_out_unfolding(k), energy)
    if ranks is None:
        ranks = Tucker2Ranks(into.rank, out.rank)
    chosen = tucker2_clipped_ranks(ranks, kernel.shape)
    u_in, u_out = into.vectors[:, : chosen.r_in], out.vectors[:, : chosen.r_out]
    for _ in range(hooi_sweeps):
        on_out = torch.einsum("to,tchw->ochw", u_out, k)
        u_in = spectrum(_in_unfolding(on_out)).vectors[:, : chosen.r_in]
        on_in = torch.einsum("ci,tchw->tihw", u_in, k)
        u_out = spectrum(_out_unfolding(on_in)).vectors[:, : chosen.r_out]
    core = torch.einsum("to,tchw,ci->oihw", u_out, k, u_in)
    approx = torch.einsum("to,oihw,ci->tchw", u_out, core, u_in)
    rel_error = float(torch.linalg.norm(approx - k) / torch.linalg.norm(k).clamp_min(1e-300))
    core = times_power_of_two(core, exponent)
    dtype = kernel.dtype
    return Tucker2Factors(u_in.to(dtype), core.to(dtype), u_out.to(dtype), chosen, rel_error)
