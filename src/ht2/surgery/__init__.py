"""Model surgery: walk any nn.Module, decide per layer, swap, and keep a replayable plan."""

from ht2.surgery.compress import compress
from ht2.surgery.plan import apply_plan, collect_plan
from ht2.surgery.policy import METHODS, Decision, paper_policy
from ht2.surgery.report import CompressionReport, LayerReport
from ht2.surgery.walk import candidate_layers, first_conv_name

__all__ = [
    "METHODS",
    "CompressionReport",
    "Decision",
    "LayerReport",
    "apply_plan",
    "candidate_layers",
    "collect_plan",
    "compress",
    "first_conv_name",
    "paper_policy",
]
