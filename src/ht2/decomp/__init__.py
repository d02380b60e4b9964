"""Pure decomposition math: tensors in, factors out. No nn modules, no I/O."""

from ht2.decomp.basis import left_singular, squared_singular_values
from ht2.decomp.ht2 import HT2Factors, HT2Ranks, ht2_decompose, ht2_ranks, ht2_reconstruct
from ht2.decomp.ranks import check_energy, energy_rank
from ht2.decomp.svd import LowRankFactors, truncated_svd, tucker1

__all__ = [
    "HT2Factors",
    "HT2Ranks",
    "LowRankFactors",
    "check_energy",
    "energy_rank",
    "ht2_decompose",
    "ht2_ranks",
    "ht2_reconstruct",
    "left_singular",
    "squared_singular_values",
    "truncated_svd",
    "tucker1",
]
