"""The teacher for distillation: the uncompressed model a compressed folder was made from,
rebuilt from the weights its ht2.json records (or weights the caller gives)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ht2.errors import HT2Error

if TYPE_CHECKING:
    from torch import nn

TEACHER_PARAMS = ("teacher_weights=FILE", "teacher_weights", "distill=True")


def teacher_for(source: Path, weights: str | None) -> nn.Module:
    """The uncompressed model the folder `source` was made from, built with `weights` (a
    file) or the weights its ht2.json records; HT2Error when neither can be had here."""
    from ht2 import models
    from ht2.io import read_manifest

    arch = read_manifest(source).get("arch") or {}
    chosen = weights or arch.get("weights")
    if not arch or not chosen:
        raise HT2Error(
            f"distill=True needs the uncompressed model's weights; {source}/ht2.json "
            "does not name them: pass teacher_weights=FILE",
            params=TEACHER_PARAMS,
        )
    if weights and not Path(weights).is_file():
        raise HT2Error(f"teacher_weights {weights} is not a file", params=TEACHER_PARAMS)
    if chosen != "pretrained" and not Path(chosen).is_file():
        raise HT2Error(
            f"distill=True: the teacher weights {chosen} named in {source}/ht2.json do "
            "not exist here; pass teacher_weights=FILE",
            params=TEACHER_PARAMS,
        )
    return models.create(arch["name"], weights=chosen, **arch.get("kwargs", {}))


def unknown_teacher(source: Path, weights: str | None) -> str | None:
    """Why no teacher can be rebuilt for `source` (None when one can); the text names
    teacher_weights=FILE (see TEACHER_PARAMS)."""
    from ht2.io import read_manifest

    if weights:
        return None
    arch = read_manifest(source).get("arch") or {}
    chosen = arch.get("weights")
    if not arch or not chosen:
        return (
            f"{source}/ht2.json does not record the uncompressed model's weights "
            "(pass teacher_weights=FILE to distil)"
        )
    if chosen != "pretrained" and not Path(chosen).is_file():
        return (
            f"the uncompressed weights {chosen} that {source}/ht2.json records are not here "
            "(pass teacher_weights=FILE to distil)"
        )
    return None


def choose_teacher(
    source: Path, distill: bool | None, weights: str | None
) -> tuple[nn.Module | None, str | None]:
    """The teacher: asked for (True), refused (False), or by default (None) whenever the
    uncompressed weights are known; with a default that cannot have one, why not."""
    if distill is False:
        return None, None
    if distill is None:
        why = unknown_teacher(source, weights)
        if why is not None:
            return None, why
    return teacher_for(source, weights), None
