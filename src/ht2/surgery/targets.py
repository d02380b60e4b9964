"""One global energy for a size target: "4x fewer parameters" or "3x fewer MACs"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ht2.errors import HT2Error

TARGET_KINDS = ("params", "macs")
TOLERANCE = 0.02  # a target is met when the reduction is within 2 % of it
SMALLEST_ENERGY = 1e-6


@dataclass(frozen=True)
class Target:
    """A whole-model reduction factor of parameters or MACs (4.0 means 4x fewer)."""

    kind: str
    factor: float

    def __post_init__(self):
        if self.kind not in TARGET_KINDS:
            raise HT2Error(f"unknown target kind {self.kind!r}; choose params or macs")
        if not self.factor > 1.0:
            raise HT2Error(
                f"a {self.kind} target must be a reduction factor above 1 (such as 4 or 4x), "
                f"got {self.factor:g}"
            )


def parse_factor(text: str) -> float:
    """'4', '4x' or '4X' as 4.0; ValueError for anything else."""
    cleaned = text.strip().lower().removesuffix("x")
    try:
        return float(cleaned)
    except ValueError:
        raise ValueError(f"expected a reduction factor such as 4 or 4x, got {text!r}") from None


@dataclass(frozen=True)
class TargetSolution:
    """The energy chosen for a target, the reduction it reaches, and whether that is close."""

    energy: float
    reached: float
    met: bool
    note: str

    def to_dict(self, target: Target) -> dict[str, object]:
        return {
            "kind": target.kind,
            "factor": target.factor,
            "energy": self.energy,
            "reached": self.reached,
            "met": self.met,
            "note": self.note,
        }


def solve_energy(
    reduction_at: Callable[[float], float], target: Target, steps: int = 40
) -> TargetSolution:
    """Bisect the global energy so that `reduction_at(energy)` comes within 2 % of the target.

    The reduction grows as the energy falls but in steps (ranks are integers), so the closest
    of the two energies around the crossing is kept; an unreachable target raises HT2Error.
    """
    strongest = reduction_at(SMALLEST_ENERGY)
    if strongest < target.factor * (1 - TOLERANCE):
        raise HT2Error(
            f"{target.factor:g}x fewer {target.kind} is out of reach: even rank 1 everywhere "
            f"gives {strongest:.2f}x (compress more layers, or lower the target)"
        )
    low, high = SMALLEST_ENERGY, 1.0  # reduction(low) >= target > reduction(high), kept so
    reached_low, reached_high = strongest, reduction_at(high)
    if reached_high >= target.factor:
        return _solution(high, reached_high, target)
    for _ in range(steps):
        middle = (low + high) / 2
        reached = reduction_at(middle)
        if reached >= target.factor:
            low, reached_low = middle, reached
        else:
            high, reached_high = middle, reached
        if abs(reached_low / target.factor - 1) <= TOLERANCE / 4:
            break
    if abs(reached_high / target.factor - 1) < abs(reached_low / target.factor - 1):
        return _solution(high, reached_high, target)
    return _solution(low, reached_low, target)


def _solution(energy: float, reached: float, target: Target) -> TargetSolution:
    met = abs(reached / target.factor - 1) <= TOLERANCE
    note = (
        ""
        if met
        else (
            f"nearest reachable is {reached:.2f}x: ranks are whole numbers, so the reduction "
            f"jumps past {target.factor:g}x between neighbouring energies"
        )
    )
    return TargetSolution(energy, reached, met, note)
