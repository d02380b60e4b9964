"""Recipes: the whole road from a trained model to a compressed one, as one library call.

from ht2.recipes import compress_with_recipe
report = compress_with_recipe(model, "best", target=Target("params", 4), data="cifar10/")
"""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "RECIPES": "ht2.recipes.recipe",
    "Recipe": "ht2.recipes.recipe",
    "default_recipe": "ht2.recipes.recipe",
    "get_recipe": "ht2.recipes.recipe",
    "compress_with_recipe": "ht2.recipes.pipeline",
    "pipeline_lines": "ht2.recipes.notes",
    "EpochBudget": "ht2.recipes.budget",
    "epochs_within": "ht2.recipes.budget",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "RECIPES",
    "EpochBudget",
    "Recipe",
    "compress_with_recipe",
    "default_recipe",
    "epochs_within",
    "get_recipe",
    "pipeline_lines",
]
