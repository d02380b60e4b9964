"""What a compression did, layer by layer, as data (JSON) and as a table (people)."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field
from typing import Any


@dataclass
class LayerReport:
    """One Conv/Linear layer: what was done to it and what it cost."""

    name: str
    type: str
    method: str  # the layer's kind: "ht2" | "tucker2" | "cp" | "spatial_svd" | "svd" | "dense"
    ranks: dict[str, int] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    macs_before: int | None = None
    macs_after: int | None = None
    rel_error: float | None = None
    reason: str = ""
    # data-aware runs: relative output error on calibration images after each step
    calib_errors: dict[str, float] | None = None
    energy: float | None = None  # the energy this layer's ranks kept (None: given or VBMF)
    form: str | None = None  # how the factors run, once chosen by --latency-aware
    form_times_ms: dict[str, float] | None = None  # median ms per form timed; "dense": the original


@dataclass
class CompressionReport:
    """The whole model: totals before and after, and every layer's line."""

    model: str
    method: str  # the run's k x k method (kxk_methods(); older reports: "svd")
    energy: float | None
    keep_if_larger: bool
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    seconds: float
    layers: list[LayerReport] = field(default_factory=list)
    accuracy: dict[str, Any] | None = None  # top-1/top-5 once evaluated (calibrate, finetune)
    data_aware: dict[str, Any] | None = None  # settings and held-out checks of a data-aware run
    rank_rule: str = "energy"  # "energy" | "vbmf" | "file"
    round_ranks: int = 1
    rounding_params: int | None = None  # parameters --round-ranks added
    target: dict[str, Any] | None = None  # kind, factor, reached, energy (with --target-*)
    refine_sweeps: int = 0  # ALS/HOOI rounds after the one-pass factors
    pipeline: dict[str, Any] | None = None  # the recipe and every step it ran (ht2.recipes)
    latency_aware: dict[str, Any] | None = None  # how --latency-aware chose forms, what it cost
    provenance: dict[str, Any] | None = None  # how the plan chose ranks (ht2.Plan.provenance)

    @property
    def param_reduction(self) -> float:
        return self.params_before / max(self.params_after, 1)

    @property
    def mac_reduction(self) -> float | None:
        if self.macs_before is None or not self.macs_after:
            return None
        return self.macs_before / self.macs_after

    @property
    def replaced(self) -> list[LayerReport]:
        """Layers that run factorized: not those left dense, nor those decomposed and then
        put back in the dense form for speed (--latency-aware --allow-dense)."""
        return [layer for layer in self.layers if layer.method != "dense" and layer.form != "dense"]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["param_reduction"] = self.param_reduction
        data["mac_reduction"] = self.mac_reduction
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressionReport:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        _require_fields(cls, fields, "the report")
        layers = data.get("layers", [])
        if not isinstance(layers, list) or not all(isinstance(item, dict) for item in layers):
            raise ValueError("its layers are not a list of objects")
        for layer in layers:
            _require_fields(LayerReport, layer, f"layer {layer.get('name', '?')!r}")
        fields["layers"] = [LayerReport(**layer) for layer in layers]
        return cls(**fields)


def _require_fields(kind: type, data: dict[str, Any], what: str) -> None:
    """ValueError naming the fields `kind` needs that `data` lacks, or those it does not know."""
    needed = [
        name
        for name, spec in kind.__dataclass_fields__.items()
        if spec.default is MISSING and spec.default_factory is MISSING and name != "layers"
    ]
    missing = [name for name in needed if name not in data]
    if missing:
        raise ValueError(f"{what} lacks the fields {', '.join(missing)}")
    unknown = [name for name in data if name not in kind.__dataclass_fields__]
    if unknown:
        raise ValueError(f"{what} has fields this ht2 does not know: {', '.join(unknown)}")
