"""The compression recipes: which steps turn a trained model into a smaller one, and how.

`paper` is the paper's policy exactly: one energy for every layer (bisected for a size
target), the one-pass factors, no data. `best` is what measured best here (BENCHMARKS.md,
rank allocation and zero-shot sections): per-layer energies chosen by each layer's measured
damage (sensitivity allocation), factors refined by ten ALS/HOOI sweeps, then refitted by least
squares to the original layers' outputs on training images, with BatchNorm re-estimation kept
only if held-out images say it helps.

Kept free of torch, so that the command line can name, describe and check a recipe before
anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ht2.choices import ALLOCATIONS, SENSITIVITY_ENERGIES
from ht2.errors import HT2Error

DATA_AWARE_MODES = ("whiten", "refit", "both")
BN_CHOICES = ("auto", "always", "never")
IMAGE_COUNTS = ("sensitivity_images", "data_aware_images", "calibrate_images")
# the parameters (or settings) that the messages of _calibrate_clash and _needs_data name
CLASH_PARAMS = ("recipe", "data_aware", "bn_calibrate", "calibrate=True")
NEEDS_DATA_PARAMS = ("recipe", "allocate", "data_aware", "calibrate=True", "data=PATH")


@dataclass(frozen=True)
class Recipe:
    """Every choice of the compression pipeline; `overrides` names those a caller changed."""

    name: str
    allocate: str = "uniform"  # uniform | spectrum | sensitivity (with a size target)
    candidates: tuple[float, ...] = SENSITIVITY_ENERGIES  # energies sensitivity measures
    bn_aware: bool = True  # sensitivity measured with the calibration images' BN statistics
    refine_sweeps: int = 0  # ALS/HOOI rounds after the one-pass factors
    data_aware: str | None = None  # None (off) | whiten | refit | both
    rank_from: str = "plain"  # data-aware ranks: of the plain or of the whitened weights
    refit: str = "all"  # data-aware refit: "last", "all" factors, or "blocks" (all, then by block)
    refit_dense: bool = True  # with a refit, also refit the dense layers after compressed ones
    bn_calibrate: str = "auto"  # after a data-aware fit: auto (held-out images decide)
    calibrate: bool = False  # BatchNorm re-estimation of plain factors on training images
    sensitivity_images: int = 256
    data_aware_images: int = 512
    calibrate_images: int = 2048
    overrides: tuple[str, ...] = ()

    def with_choices(self, **changes: Any) -> Recipe:
        """A copy with `changes` laid over the recipe (None values are ignored); the fields
        whose value the caller set are remembered in `overrides`."""
        known = {f.name for f in fields(self)} - {"name", "overrides"}
        unknown = set(changes) - known
        if unknown:
            raise HT2Error(f"unknown recipe settings: {', '.join(sorted(unknown))}")
        given = {key: value for key, value in changes.items() if value is not None}
        if given.get("data_aware") == "off":  # the command line's way to drop the step
            given["data_aware"] = None
        if "candidates" in given:
            given["candidates"] = tuple(given["candidates"])
        named = tuple(key for key in known if key in given) + self.overrides
        return replace(self, **given, overrides=tuple(sorted(set(named))))

    def with_images(self, count: int | None) -> Recipe:
        """The same recipe with every data step using `count` training images (None: as is)."""
        if count is None:
            return self
        return self.with_choices(
            sensitivity_images=count, data_aware_images=count, calibrate_images=count
        )

    @property
    def data_steps(self) -> dict[str, int]:
        """The steps that read training images, each with the images it needs."""
        steps = {}
        if self.allocate == "sensitivity":
            steps["sensitivity allocation"] = self.sensitivity_images
        if self.data_aware:
            steps[f"data-aware {self.data_aware}"] = self.data_aware_images
        if self.calibrate:
            steps["BatchNorm calibration"] = self.calibrate_images
        return steps

    def check(self, has_target: bool, has_data: bool) -> None:
        """One-line HT2Errors for a recipe that cannot run with what was given."""
        self._check_values()
        if self.data_aware and self.calibrate:
            raise HT2Error(self._calibrate_clash(), params=CLASH_PARAMS)
        if self.data_aware is None:
            odd = [f for f in ("rank_from", "refit", "refit_dense") if f in self.overrides]
            if odd:
                raise HT2Error(
                    "rank_from, refit and refit_dense only apply with data_aware",
                    params=("rank_from", "refit", "refit_dense", "data_aware"),
                )
        if self.allocate != "uniform" and not has_target:
            raise HT2Error(
                f"{self.setting('allocate')} spends a size budget: give target_params or "
                "target_macs",
                params=("recipe", "allocate", "target_params", "target_macs"),
            )
        if not has_data:
            needing = next(iter(self.data_steps), None)
            if needing is not None:
                raise HT2Error(self._needs_data(needing), params=NEEDS_DATA_PARAMS)

    def _check_values(self) -> None:
        for value, choices, name in (
            (self.allocate, ALLOCATIONS, "allocate"),
            (self.bn_calibrate, BN_CHOICES, "bn_calibrate"),
        ):
            if value not in choices:
                raise HT2Error(
                    f"{name} must be one of {', '.join(choices)}, not {value!r}", params=name
                )
        if self.data_aware is not None and self.data_aware not in DATA_AWARE_MODES:
            raise HT2Error(
                f"data_aware must be one of {', '.join(DATA_AWARE_MODES)}, not {self.data_aware!r}",
                params="data_aware",
            )
        if self.refine_sweeps < 0:
            raise HT2Error(
                f"refine_sweeps must be 0 or more, got {self.refine_sweeps}",
                params="refine_sweeps",
            )
        counts = {name: getattr(self, name) for name in IMAGE_COUNTS}
        fewest = min(counts, key=lambda name: counts[name])
        if counts[fewest] < 1:
            raise HT2Error(f"{fewest} must be at least 1, not {counts[fewest]}", params=fewest)

    def setting(self, name: str) -> str:
        """How setting `name` came about: 'allocate spectrum' when given, else
        'recipe best (allocate sensitivity)' when the recipe chose it."""
        value = getattr(self, name)
        if name in self.overrides:
            return f"{name} {value}"
        return f"recipe {self.name} ({name} {value})"

    def _needs_data(self, step: str) -> str:
        if step == "sensitivity allocation":
            if "allocate" in self.overrides:
                return (
                    "allocate sensitivity measures each layer on calibration images: give "
                    "data=PATH (a folder with train/)"
                )
            why = "measures each layer on training images"
        elif step.startswith("data-aware"):
            if "data_aware" in self.overrides:
                return "data_aware needs data=PATH (a folder with train/)"
            why = "fits the factors to training images"
        else:
            return "calibrate=True needs data=PATH (a folder with train/)"
        return (
            f"recipe {self.name} {why}: give data=PATH (a folder with train/), or use "
            "recipe paper (no data)"
        )

    def _calibrate_clash(self) -> str:
        if "data_aware" in self.overrides:
            return (
                "data_aware decides on BatchNorm calibration itself; use bn_calibrate "
                "instead of calibrate=True"
            )
        return (
            f"recipe {self.name} fits the factors to data (data_aware {self.data_aware}) and "
            "decides on BatchNorm itself; use bn_calibrate always instead of calibrate=True, "
            "or data_aware off to calibrate the plain factors"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidates"] = list(self.candidates)
        data["overrides"] = list(self.overrides)
        return data


RECIPES: dict[str, Recipe] = {
    "paper": Recipe("paper"),
    "best": Recipe(
        "best",
        allocate="sensitivity",
        refine_sweeps=10,
        data_aware="refit",
        bn_calibrate="auto",
    ),
}


def default_recipe(has_data: bool, has_target: bool) -> str:
    """`best` when there are training images and a size target to spend, else `paper`."""
    return "best" if has_data and has_target else "paper"


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or a one-line HT2Error listing the names."""
    try:
        return RECIPES[name]
    except KeyError:
        raise HT2Error(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}") from None
