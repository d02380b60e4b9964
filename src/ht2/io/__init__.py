"""Artefacts: plan JSON + safetensors, rebuilt without pickle."""

from ht2.io.artefacts import load, read_manifest, save
from ht2.io.atomic import atomic_directory, check_output_dir

__all__ = ["atomic_directory", "check_output_dir", "load", "read_manifest", "save"]
