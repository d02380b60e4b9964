"""The recipe and its steps as one line of text, for `ht2 compress` and `ht2 report`."""

from __future__ import annotations

from typing import Any

from ht2.layers.registry import sweeps_refine

FLAGS = {
    "allocate": "--allocate",
    "candidates": "--candidates",
    "bn_aware": "--no-bn-aware",
    "refine_sweeps": "--refine-sweeps",
    "data_aware": "--data-aware",
    "rank_from": "--rank-from",
    "refit": "--refit",
    "refit_dense": "--no-refit-dense",
    "bn_calibrate": "--bn-calibrate",
    "calibrate": "--calibrate",
    "sensitivity_images": "--calib-images",
    "data_aware_images": "--calib-images",
    "calibrate_images": "--calib-images",
}
SWITCHES = ("bn_aware", "refit_dense", "calibrate")  # flags that take no value


def pipeline_lines(pipeline: dict[str, Any] | None) -> list[str]:
    """'recipe best (--allocate spectrum given): step -> step -> step; 12.3 s', or nothing
    for a report written without a recipe."""
    if not isinstance(pipeline, dict) or not isinstance(pipeline.get("steps"), list):
        return []
    head = f"recipe {pipeline.get('recipe')}"
    given = _given_flags(pipeline.get("overrides") or {})
    if given:
        head += f" ({', '.join(given)} given)"
    records = [step for step in pipeline["steps"] if isinstance(step, dict)]
    steps = [_describe(step) for step in records]
    if not any(step.get("images") or step.get("held_out") for step in records):
        steps.append("no training images")
    seconds = pipeline.get("seconds")
    timing = f"; {seconds:.1f} s in all" if isinstance(seconds, (int, float)) else ""
    return [f"{head}: {' -> '.join(steps)}{timing}"]


def _given_flags(overrides: dict[str, Any]) -> list[str]:
    shown = []
    for name, value in overrides.items():
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        if name in SWITCHES:
            text = flag
        elif name == "data_aware" and value is None:
            text = f"{flag} off"
        elif isinstance(value, list):
            text = f"{flag} {','.join(f'{v:g}' for v in value)}"
        else:
            text = f"{flag} {value}"
        if text not in shown:
            shown.append(text)
    return shown


def _describe(step: dict[str, Any]) -> str:
    kind = step.get("step")
    if kind == "allocate":
        return _allocation(step)
    if kind == "factors":
        return _factors(step)
    if kind == "batchnorm":
        return _batchnorm(step)
    if kind == "forms":
        return _forms(step)
    if kind == "speed target":
        return _speed(step)
    return str(kind)


def _allocation(step: dict[str, Any]) -> str:
    name = step.get("allocation")
    if name == "uniform":
        energy = step.get("energy")
        shown = f" ({energy:.4f})" if isinstance(energy, (int, float)) else ""
        return "one energy for every layer" + shown
    if name == "sensitivity":
        return f"sensitivity allocation on {step.get('images')} images"
    return f"{name} allocation"


def _factors(step: dict[str, Any]) -> str:
    sweeps = step.get("refine_sweeps", 0)
    text = f"{step.get('method')} factors"
    if sweeps_refine(str(step.get("method"))):
        text += f" refined by {sweeps} ALS sweeps" if sweeps else " (one pass)"
    mode = step.get("data_aware")
    if mode:
        what = {"refit": "refitted", "whiten": "whitened", "both": "whitened and refitted"}
        text += f", {what.get(mode, mode)} on {step.get('images')} training images"
        if step.get("refit") == "blocks" and mode != "whiten":
            text += ", then fitted block by block"
    return text


def _batchnorm(step: dict[str, Any]) -> str:
    how = step.get("how")
    if how == "calibrate":
        return f"BatchNorm re-estimated on {step.get('images')} training images"
    if how == "auto":
        verdict = "kept" if step.get("kept") else "declined"
        return f"BatchNorm re-estimation {verdict} on {step.get('held_out')} held-out images"
    if how == "always":
        return "BatchNorm re-estimated"
    return "BatchNorm statistics left as they were"


def _forms(step: dict[str, Any]) -> str:
    layout = {"per_layer": "each layer's fastest", "as_decomposed": "as decomposed"}
    kept = layout.get(step.get("kept"), step.get("kept"))
    return f"forms timed on {step.get('device')} at batch {step.get('batch_size')}: {kept} kept"


def _speed(step: dict[str, Any]) -> str:
    reached = step.get("reached")
    shown = f"{reached:.2f}x" if isinstance(reached, (int, float)) else "?"
    text = (
        f"ranks and forms for {step.get('target')} faster, timed on {step.get('device')} at "
        f"batch {step.get('batch_size')}: {shown} reached"
    )
    return text if step.get("met") else f"{text} (out of reach)"
