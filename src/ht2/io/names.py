"""Layer names as files may give them: dotted module paths, never file-system paths."""

from __future__ import annotations

import re
from typing import Any

# A part as nn.Module names children: identifiers, indices, and names such as torchvision
# RegNet's "block1-0"; never "/", "\\", whitespace or an empty part (so no ".." either).
_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def layer_name_problem(name: Any) -> str | None:
    """Why `name` is not a dotted module path (identifiers, indices, hyphenated names), or
    None when it is."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name or any(not _NAME_PART.fullmatch(part) for part in name.split(".")):
        return f"{name!r} is not a module path such as 'layer1.0.conv1'"
    return None
