"""Decide before doing: a Plan per model (which layer becomes what, at which ranks), made by
`plan`, carried out exactly by `apply`; `compress` is both in one call."""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "CompressOptions": "ht2.planning.options",
    "plan": "ht2.planning.planner",
    "compress": "ht2.planning.api",
    "PLANNERS": "ht2.planning.registry",
    "plan_with": "ht2.planning.registry",
    "register_planner": "ht2.planning.registry",
    "apply": "ht2.surgery.apply",
    "Plan": "ht2.surgery.plan_model",
    "LayerPlan": "ht2.surgery.plan_model",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "PLANNERS",
    "CompressOptions",
    "LayerPlan",
    "Plan",
    "apply",
    "compress",
    "plan",
    "plan_with",
    "register_planner",
]
