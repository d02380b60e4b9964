"""Save and load compressed models as model.safetensors + ht2.json: no pickle anywhere."""

from __future__ import annotations

import contextlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ht2 import __version__
from ht2.errors import BAD_JSON, HT2Error
from ht2.io.atomic import atomic_directory, follow_umask, staging_directory
from ht2.io.folds import FOLDED_BN, apply_folds, check_folds, folds_of
from ht2.io.names import layer_name_problem
from ht2.io.plan_check import (
    check_arch,
    check_counts_in_file,
    check_plan,
    check_plan_fits,
    tensor_shapes,
)
from ht2.models.weights import refuse_unusable, state_dict_mismatches
from ht2.surgery import CompressionReport, apply_plan, collect_plan
from ht2.surgery.prune import PRUNED, apply_pruning, check_pruned, pruned_of

FORMAT = "ht2"
# The newest read here. 2 adds "folded_bn"; 3 adds the layer flags "pad_same" and
# "derived_weight" (subclasses such as timm's Conv2dSame and StdConv2d); 4 adds "pruned" (channel
# pruning, ht2.surgery.prune). Each folder is written with the oldest version that holds it, so
# plain folders stay readable by older ht2.
FORMAT_VERSION = 4
_LAYER_FLAGS = ("pad_same", "derived_weight")
MANIFEST = "ht2.json"
TENSORS = "model.safetensors"
REPORT = "report.json"


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON (the caller arranges atomicity)."""
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def manifest_of(model: nn.Module, report: CompressionReport | None = None) -> dict[str, Any]:
    """The ht2.json content for `model`: format, architecture, energy, the plan (its layers
    as they are now, and the provenance of its decisions) and any folded BatchNorms, under the
    oldest format_version that holds them (see FORMAT_VERSION)."""
    arch = getattr(model, "ht2_arch", None)
    folds = folds_of(model)
    pruned = pruned_of(model)
    plan = collect_plan(model)
    flagged = any(entry["layer"].get(flag) for entry in plan for flag in _LAYER_FLAGS)
    manifest = {
        "format": FORMAT,
        "format_version": 4 if pruned else 3 if flagged else 2 if folds else 1,
        "ht2_version": __version__,
        "arch": arch if isinstance(arch, dict) else None,
        "model_class": type(model).__name__,
        "energy": report.energy if report else None,
        "method": report.method if report else None,
        "plan": plan,
    }
    if report is not None and report.provenance:
        manifest["provenance"] = report.provenance  # how the plan was decided (ht2.Plan)
    if pruned:
        manifest[PRUNED] = pruned
    if folds:
        manifest[FOLDED_BN] = folds
    return manifest


def write_model(model: nn.Module, directory: Path, report: CompressionReport | None) -> None:
    """Write the three files into an existing (temporary) directory."""
    tensors = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
    }
    save_file(tensors, str(directory / TENSORS), metadata={"format": FORMAT})
    write_json(directory / MANIFEST, manifest_of(model, report))
    if report is not None:
        write_json(directory / REPORT, report.to_dict())


def save_into(model: nn.Module, directory: Path, report: CompressionReport | None) -> None:
    """Write the model files into an existing folder that holds other things (a training run),
    each file under a temporary name first, then renamed over the old one."""
    with staging_directory(directory, "model-files") as staging:
        write_model(model, staging, report)
        follow_umask(staging)
        for item in sorted(staging.iterdir()):
            os.replace(item, directory / item.name)


def save(
    model: nn.Module,
    directory: str | os.PathLike,
    report: CompressionReport | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a (compressed) model folder; all or nothing: written aside, then renamed into place."""
    with atomic_directory(Path(directory), overwrite=overwrite) as staging:
        write_model(model, staging, report)
    return Path(directory)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Read DIR/ht2.json and check all of it (see ht2.io.plan_check) before any use."""
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise HT2Error(f"{directory} is not a folder; give a folder written by `ht2 compress`")
    if not path.is_file():
        raise HT2Error(f"{path} is missing: {directory} is not a folder written by `ht2 compress`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except BAD_JSON as error:
        raise HT2Error(f"{path} is not valid JSON (truncated?): {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise HT2Error(f'{path} is not an ht2 manifest (no "format": "ht2")')
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise HT2Error(f"{path} has format_version {version!r}, not a whole number from 1")
    if version > FORMAT_VERSION:
        raise HT2Error(
            f"{path} has format_version {version!r}; this ht2 {__version__} reads up to "
            f"{FORMAT_VERSION}: upgrade ht2"
        )
    if not isinstance(manifest.get("plan"), list):
        raise HT2Error(f"{path} has no plan list")
    check_arch(manifest.get("arch"), str(path))
    check_plan(manifest["plan"], str(path))
    if FOLDED_BN in manifest:
        for pair in check_folds(manifest[FOLDED_BN], str(path)):
            for name in pair.values():
                if layer_name_problem(name):
                    raise HT2Error(f"{path}: {FOLDED_BN} names {name!r}, not a module path")
    for entry in check_pruned(manifest.get(PRUNED, []), str(path)):
        for name in (entry["producer"], entry["norm"], entry["consumer"]):
            if name is not None and layer_name_problem(name):
                raise HT2Error(f"{path}: {PRUNED} names {name!r}, not a module path")
    return manifest


def read_report(directory: str | os.PathLike, required: bool = True) -> CompressionReport | None:
    """DIR/report.json as a CompressionReport; None when absent and not `required`."""
    path = Path(directory) / REPORT
    if not path.is_file():
        if not required:
            return None
        raise HT2Error(f"{path} is missing: {directory} has no compression report")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except BAD_JSON as error:
        raise HT2Error(f"{path} is not valid JSON (truncated?): {error}") from None
    try:
        return CompressionReport.from_dict(data)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise HT2Error(f"{path} is not an ht2 compression report: {error}") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, with a one-line error naming it when that fails."""
    if not path.is_file():
        raise HT2Error(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise HT2Error(f"{path} cannot be read (truncated or not safetensors): {error}") from None


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load `tensors` into `model`, every key and shape matching, else a one-line error."""
    expected = model.state_dict()
    _refuse_mismatches(expected, tensors, path)
    refuse_unusable(tensors, str(path), model)
    # safetensors keeps no module versions; the tensors were saved from modules of the versions
    # this code builds, so hand those over (load hooks such as MNASNet's read them).
    versioned = OrderedDict(tensors)
    versioned._metadata = getattr(expected, "_metadata", OrderedDict())  # type: ignore[attr-defined]
    model.load_state_dict(versioned, strict=True)


def _refuse_mismatches(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path
) -> None:
    problems = state_dict_mismatches(expected, found)
    if problems:
        raise HT2Error(f"{path} does not fit the model: {'; '.join(problems)}")


def load(
    directory: str | os.PathLike, model: nn.Module | None = None, map_location: str = "cpu"
) -> nn.Module:
    """Rebuild a saved model: architecture from the registry (or `model`), plan, then tensors.

    The result is in eval mode and computes exactly what the saved model computed.
    """
    directory = Path(directory)
    model = _skeleton(directory, read_manifest(directory), model)
    load_state_strict(model, read_tensors(directory / TENSORS), directory / TENSORS)
    return model.to(map_location).eval()


def check_folder(directory: str | os.PathLike) -> dict[str, Any]:
    """Every check `load` makes short of reading the tensors (the manifest; for a registry
    model, the counts and the plan against the architecture and the tensor file's header
    against the model, built on the meta device so that it costs no memory); the manifest.
    For commands that only read."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.get("arch"):
        shapes = tensor_shapes(directory / TENSORS)
        model = _skeleton(directory, manifest, None, meta=True, shapes=shapes)
        found = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
        _refuse_mismatches(model.state_dict(), found, directory / TENSORS)
    return manifest


def _skeleton(
    directory: Path,
    manifest: dict[str, Any],
    model: nn.Module | None,
    meta: bool = False,
    shapes: dict[str, torch.Size] | None = None,
) -> nn.Module:
    """The saved model's modules, untrained: the architecture (the registry's, or `model`),
    pruned, factorized by the plan and folded as the manifest says; with `meta`, on the meta
    device as far as the architecture allows (see _architecture). `shapes`: the tensor file's
    header, when the caller has read it already."""
    where = str(directory / MANIFEST)
    plan, folds = manifest["plan"], manifest.get(FOLDED_BN, [])
    if model is None:
        arch = manifest.get("arch")
        if not arch:
            raise HT2Error(
                f"{directory} holds a {manifest.get('model_class', 'custom')} model that is not "
                "in the registry: pass the architecture, ht2.load(dir, model=MyNet())"
            )
        if shapes is None:
            shapes = tensor_shapes(directory / TENSORS)
        check_counts_in_file(arch, shapes, where)
        model = _architecture(arch, where, meta)
        model.ht2_arch = dict(arch)
    # The rest where the architecture is: a real one (see _architecture) cannot take meta layers.
    on_meta = meta and any(parameter.is_meta for parameter in model.parameters())
    where_built = (lambda: torch.device("meta")) if on_meta else contextlib.nullcontext
    with where_built():
        apply_pruning(model, manifest.get(PRUNED, []))
    check_plan_fits(model, plan, where)  # outside: probing an overridden forward makes inputs
    with where_built():
        apply_plan(model, plan)
        try:
            apply_folds(model, folds)
        except HT2Error as error:
            raise HT2Error(f"{where}: {error}") from None
    return model


def _architecture(arch: dict[str, Any], where: str, meta: bool = False) -> nn.Module:
    """The registry's model for a manifest's "arch" (random init; the tensors come next). With
    `meta`, on the meta device where its builder allows; some do not (torchvision's RegNets
    read a tensor while they initialize), and those are built for real, which also raises a
    bad arch's own error."""
    if meta:
        try:
            with torch.device("meta"):
                return _create(arch, where)
        except Exception:  # any type: builders fail on the meta device in many ways
            pass
    return _create(arch, where)


def _create(arch: dict[str, Any], where: str) -> nn.Module:
    from ht2.models import create

    try:
        return create(arch["name"], **arch.get("kwargs", {}))
    except HT2Error as error:
        raise HT2Error(f"{where}: arch: {error}") from None
