"""Pure decomposition math: tensors in, factors out. No nn modules, no I/O."""

from ht2.decomp.basis import left_singular, squared_singular_values
from ht2.decomp.cp import CPFactors, cp_decompose, cp_fit_error, cp_max_rank, cp_reconstruct
from ht2.decomp.ht2 import HT2Factors, HT2Ranks, ht2_decompose, ht2_ranks, ht2_reconstruct
from ht2.decomp.ranks import check_energy, energy_rank
from ht2.decomp.svd import LowRankFactors, spatial_svd, truncated_svd, tucker1
from ht2.decomp.tucker2 import Tucker2Factors, Tucker2Ranks, tucker2_decompose, tucker2_reconstruct
from ht2.decomp.unfoldings import has_unfoldings, rank_unfoldings
from ht2.decomp.vbmf import evbmf_rank, evbmf_rank_of

__all__ = [
    "CPFactors",
    "HT2Factors",
    "HT2Ranks",
    "LowRankFactors",
    "Tucker2Factors",
    "Tucker2Ranks",
    "check_energy",
    "cp_decompose",
    "cp_fit_error",
    "cp_max_rank",
    "cp_reconstruct",
    "energy_rank",
    "evbmf_rank",
    "evbmf_rank_of",
    "has_unfoldings",
    "ht2_decompose",
    "ht2_ranks",
    "ht2_reconstruct",
    "left_singular",
    "rank_unfoldings",
    "spatial_svd",
    "squared_singular_values",
    "truncated_svd",
    "tucker1",
    "tucker2_decompose",
    "tucker2_reconstruct",
]
