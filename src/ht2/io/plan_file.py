"""Plan files: write a Plan as JSON without clobbering, read one back from a plan file or from
a folder written by `ht2 compress` (its ht2.json), every field checked."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from ht2.errors import HT2Error
from ht2.surgery.plan_model import LayerPlan, Plan

MAX_PLAN_BYTES = 64 << 20  # a plan of a very large model is a few MB


def write_plan(plan: Plan, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write `plan` to `path` whole or not at all; an existing file is replaced only with
    `overwrite`, and never a folder."""
    path = Path(path)
    if path.is_dir():
        raise HT2Error(f"{path} is a folder; give a file name for the plan, such as plan.json")
    if path.exists() and not overwrite:
        raise HT2Error(f"{path} exists; use overwrite=True to replace it", params="overwrite=True")
    if not path.parent.is_dir():
        raise HT2Error(f"folder {path.parent} does not exist")
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        staging.write_text(plan.to_json(), encoding="utf-8")
        if overwrite:
            os.replace(staging, path)
        else:
            try:
                os.link(staging, path)  # fails, rather than replaces, if it appeared meanwhile
            except FileExistsError:
                raise HT2Error(
                    f"{path} exists; use overwrite=True to replace it", params="overwrite=True"
                ) from None
    finally:
        staging.unlink(missing_ok=True)


def read_plan(path: str | os.PathLike) -> Plan:
    """The Plan in a plan file (`ht2 compress --plan-only`), in an ht2.json, or in the
    ht2.json of a folder written by `ht2 compress`."""
    path = Path(path)
    if path.is_dir():
        from ht2.io.artefacts import read_manifest

        return plan_of_manifest(read_manifest(path), str(path / "ht2.json"))
    if not path.is_file():
        raise HT2Error(f"plan file {path} does not exist")
    if path.stat().st_size > MAX_PLAN_BYTES:
        raise HT2Error(f"{path} is larger than a plan can be ({MAX_PLAN_BYTES >> 20} MiB)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise HT2Error(f"cannot read plan file {path}: {error}") from None
    if path.name == "ht2.json":
        from ht2.io.artefacts import read_manifest

        return plan_of_manifest(read_manifest(path.parent), str(path))
    return Plan.from_json(text, str(path))


def plan_of_manifest(manifest: dict[str, Any], where: str) -> Plan:
    """The Plan a compressed folder was made by, from its checked manifest."""
    arch = manifest.get("arch")
    provenance = manifest.get("provenance")
    if provenance is not None:
        from ht2.io.plan_check import check_provenance

        check_provenance(provenance, where)
    layers = [
        LayerPlan(
            name=entry["name"],
            method=entry["method"],
            ranks=dict(entry["ranks"]),
            layer=entry["layer"],
            energy=entry.get("energy"),
            form=entry.get("form"),
        )
        for entry in manifest["plan"]
    ]
    return Plan(
        model=arch["name"] if isinstance(arch, dict) else str(manifest.get("model_class")),
        method=manifest.get("method") or "ht2",
        layers=layers,
        provenance=dict(provenance or {"rank_rule": "file"}),
    )
