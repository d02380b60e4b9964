"""Split names and how a folder's split is chosen: test, else val, for evaluation."""

from __future__ import annotations

from pathlib import Path

from ht2.errors import HT2Error

SPLITS = ("test", "val", "train")
EVAL_DEFAULTS = ("test", "val")


def check_split(split: str) -> str:
    """`split` itself if it is a known split name, else HT2Error."""
    if split not in SPLITS:
        raise HT2Error(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    return split


def folders_in(root: Path) -> list[str]:
    """The visible sub-folder names of `root`, sorted."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_folder(root: Path, split: str | None) -> tuple[str, Path]:
    """The split asked for (or the default evaluation split) and its folder under `root`.

    A missing folder is an HT2Error naming the folders that were found.
    """
    found = folders_in(root)
    wanted = [check_split(split)] if split else list(EVAL_DEFAULTS)
    for name in wanted:
        if name in found:
            return name, root / name
    listed = ", ".join(f"{name}/" for name in found) or "no folders"
    expected = " or ".join(f"{name}/" for name in wanted)
    raise HT2Error(
        f"{root} has no {expected} folder (found: {listed}); give an ImageFolder tree "
        f"DIR/{wanted[0]}/<class>/<image>"
    )
