"""ht2: compress trained CNNs by hierarchical Tucker-2 and SVD low-rank decomposition.

import ht2
model = ht2.models.create("cifar10_resnet20", weights="resnet20.th")
report = ht2.compress(model, energy=0.9, example_input=torch.zeros(1, 3, 32, 32))
ht2.save(model, "out/resnet20-e0.9", report)
same = ht2.load("out/resnet20-e0.9")
"""

__version__ = "0.1.0"

from ht2 import models  # noqa: E402
from ht2.errors import HT2Error  # noqa: E402
from ht2.io import load, save  # noqa: E402
from ht2.surgery import CompressionReport, compress  # noqa: E402

__all__ = ["CompressionReport", "HT2Error", "__version__", "compress", "load", "models", "save"]
