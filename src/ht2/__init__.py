"""ht2: compress trained CNNs by hierarchical Tucker-2 and SVD low-rank decomposition.

import ht2
model = ht2.models.create("cifar10_resnet20", weights="resnet20.th")
report = ht2.compress(model, energy=0.9, example_input=torch.zeros(1, 3, 32, 32))
ht2.save(model, "out/resnet20-e0.9", report)
same = ht2.load("out/resnet20-e0.9")
"""

from ht2._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "models": "ht2.models",
    "HT2Error": "ht2.errors",
    "load": "ht2.io",
    "save": "ht2.io",
    "CompressionReport": "ht2.surgery",
    "compress": "ht2.planning",
    "plan": "ht2.planning",
    "apply": "ht2.planning",
    "Plan": "ht2.planning",
    "CompressOptions": "ht2.planning",
}
# The subpackages, reachable as attributes after a plain `import ht2`, as when they were eager.
_SUBPACKAGES = ("data", "dataaware", "decomp", "experiments", "export", "io", "layers")
_SUBPACKAGES += ("metrics", "planning", "recipes", "surgery", "train")
_EXPORTS.update({name: f"ht2.{name}" for name in _SUBPACKAGES})
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "CompressOptions",
    "CompressionReport",
    "HT2Error",
    "Plan",
    "__version__",
    "apply",
    "compress",
    "load",
    "models",
    "plan",
    "save",
]
