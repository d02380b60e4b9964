"""CompressOptions: every choice `ht2.plan` takes, in one checked dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ht2.choices import METHOD_ALIASES, RANK_RULES
from ht2.decomp import check_energy
from ht2.errors import HT2Error
from ht2.layers.registry import kxk_methods
from ht2.surgery.targets import Target


@dataclass(frozen=True)
class CompressOptions:
    """How to choose each layer's decomposition and ranks.

    energy: the paper's rule, the share of each unfolding's energy the ranks keep.
    method: decomposition of k x k convs (ht2, tucker2, cp, spatial-svd); first and 1x1
        convs get SVD (Tucker-1), Linear layers SVD.
    include / exclude: globs on layer names.
    keep_if_larger: leave a layer dense when its factors would not be smaller.
    rank_rule: "energy" or "vbmf". layer_energies / layer_ranks: per-layer overrides.
    round_ranks: round every rank up to a multiple of this.
    target: a whole-model reduction; one global energy is bisected to reach it.
    refine_sweeps: rounds of alternating least squares at the chosen ranks (0: one pass).
    progress: a progress bar on a terminal.
    """

    energy: float = 0.9
    method: str = "ht2"
    include: tuple[str, ...] | list[str] | None = None
    exclude: tuple[str, ...] | list[str] | None = None
    keep_if_larger: bool = True
    rank_rule: str = "energy"
    layer_energies: Mapping[str, float] | None = None
    layer_ranks: Mapping[str, Mapping[str, int]] | None = None
    round_ranks: int = 1
    target: Target | None = None
    refine_sweeps: int = 0
    progress: bool = False

    @classmethod
    def of(cls, options: CompressOptions | None = None, **overrides: Any) -> CompressOptions:
        """`options` (or the defaults) with `overrides`; an unknown name is an HT2Error."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise HT2Error(
                f"unknown compression option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        base = {field.name: getattr(options or cls(), field.name) for field in fields(cls)}
        return cls(**{**base, **overrides})

    def check(self, has_example_input: bool) -> None:
        """HT2Error naming the parameter for any value outside its range."""
        try:
            check_energy(self.energy)
            for value in (self.layer_energies or {}).values():
                check_energy(value)
        except ValueError as error:
            raise HT2Error(str(error)) from None
        if self.method not in kxk_methods() and self.method not in METHOD_ALIASES:
            known = ", ".join(kxk_methods())
            raise HT2Error(f"unknown method {self.method!r}; choose one of {known}")
        if self.rank_rule not in RANK_RULES:
            raise HT2Error(
                f"unknown rank rule {self.rank_rule!r}; choose one of {', '.join(RANK_RULES)}"
            )
        for name, low, wanted in (
            ("round_ranks", 1, "a positive integer"),
            ("refine_sweeps", 0, "0 or more"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise HT2Error(f"{name} must be {wanted}, got {value!r}", params=name)
        if self.target is not None and self.target.kind == "macs" and not has_example_input:
            raise HT2Error("a MACs target needs an example input to count MACs")
