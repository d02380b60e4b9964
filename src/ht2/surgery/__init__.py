"""Model surgery: walk any nn.Module, decide per layer, swap, and keep a replayable plan."""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "compress": "ht2.surgery.compress",
    "apply_plan": "ht2.surgery.plan",
    "collect_plan": "ht2.surgery.plan",
    "METHODS": "ht2.surgery.policy",
    "Decision": "ht2.surgery.policy",
    "paper_policy": "ht2.surgery.policy",
    "resolve_method": "ht2.surgery.policy",
    "CompressionReport": "ht2.surgery.report",
    "LayerReport": "ht2.surgery.report",
    "candidate_layers": "ht2.surgery.walk",
    "first_conv_name": "ht2.surgery.walk",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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
    "resolve_method",
]
