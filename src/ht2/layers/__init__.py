"""Thin factorized modules: built from a dense layer, rebuildable from their plan entry."""

from ht2.layers.base import FactorizedLayer
from ht2.layers.builders import build_factorized, factorize
from ht2.layers.cp_conv import CPConv2d
from ht2.layers.ht2_conv import HT2Conv2d
from ht2.layers.spatial_svd_conv import SpatialSVDConv2d
from ht2.layers.spec import ConvSpec, LinearSpec, spec_from_dict
from ht2.layers.svd_conv import SVDConv2d
from ht2.layers.svd_linear import SVDLinear
from ht2.layers.tucker2_conv import Tucker2Conv2d

__all__ = [
    "CPConv2d",
    "ConvSpec",
    "FactorizedLayer",
    "HT2Conv2d",
    "LinearSpec",
    "SVDConv2d",
    "SVDLinear",
    "SpatialSVDConv2d",
    "Tucker2Conv2d",
    "build_factorized",
    "factorize",
    "spec_from_dict",
]
