"""Where ht2 keeps what it fetches or derives from data: $HT2_CACHE_DIR, else ~/.cache/ht2."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "HT2_CACHE_DIR"


def cache_root() -> Path:
    """The cache folder: $HT2_CACHE_DIR, else $XDG_CACHE_HOME/ht2, else ~/.cache/ht2."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ht2"
