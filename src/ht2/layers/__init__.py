"""Thin factorized modules: built from a dense layer, rebuildable from their plan entry."""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "FactorizedLayer": "ht2.layers.base",
    "build_factorized": "ht2.layers.builders",
    "factorize": "ht2.layers.builders",
    "CPConv2d": "ht2.layers.cp_conv",
    "EffectiveLayer": "ht2.layers.effective",
    "UnsupportedLayer": "ht2.layers.effective",
    "effective_layer": "ht2.layers.effective",
    "effective_spec": "ht2.layers.effective",
    "effective_weight": "ht2.layers.effective",
    "HT2Conv2d": "ht2.layers.ht2_conv",
    "SamePadConv2d": "ht2.layers.padding",
    "SpatialSVDConv2d": "ht2.layers.spatial_svd_conv",
    "ConvSpec": "ht2.layers.spec",
    "LinearSpec": "ht2.layers.spec",
    "spec_from_dict": "ht2.layers.spec",
    "SVDConv2d": "ht2.layers.svd_conv",
    "SVDLinear": "ht2.layers.svd_linear",
    "Tucker2Conv2d": "ht2.layers.tucker2_conv",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "CPConv2d",
    "ConvSpec",
    "EffectiveLayer",
    "FactorizedLayer",
    "HT2Conv2d",
    "LinearSpec",
    "SVDConv2d",
    "SVDLinear",
    "SamePadConv2d",
    "SpatialSVDConv2d",
    "Tucker2Conv2d",
    "UnsupportedLayer",
    "build_factorized",
    "effective_layer",
    "effective_spec",
    "effective_weight",
    "factorize",
    "spec_from_dict",
]
