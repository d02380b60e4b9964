"""Artefacts: plan JSON + safetensors, rebuilt without pickle."""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "load": "ht2.io.artefacts",
    "read_manifest": "ht2.io.artefacts",
    "save": "ht2.io.artefacts",
    "atomic_directory": "ht2.io.atomic",
    "check_output_dir": "ht2.io.atomic",
    "save_verified": "ht2.io.verified",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["atomic_directory", "check_output_dir", "load", "read_manifest", "save", "save_verified"]
