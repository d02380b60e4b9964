"""Model surgery: walk any nn.Module, carry out a Plan exactly, and rebuild saved plans."""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "apply": "ht2.surgery.apply",
    "Plan": "ht2.surgery.plan_model",
    "LayerPlan": "ht2.surgery.plan_model",
    "apply_plan": "ht2.surgery.plan",
    "collect_plan": "ht2.surgery.plan",
    "METHODS": "ht2.choices",
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
    "LayerPlan",
    "Plan",
    "apply",
    "CompressionReport",
    "Decision",
    "LayerReport",
    "apply_plan",
    "candidate_layers",
    "collect_plan",
    "first_conv_name",
    "paper_policy",
    "resolve_method",
]
