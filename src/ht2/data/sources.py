"""What `--data` names: an ImageFolder tree, a .tar.gz of one, or CIFAR-10 python batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ht2.data.archive import extract_once, is_archive
from ht2.data.paths import cache_root
from ht2.data.splits import SPLITS, folders_in
from ht2.errors import HT2Error

CIFAR10_KEYWORD = "cifar10"
CIFAR10_BATCHES = "cifar-10-batches-py"
FOLDER = "folder"
BATCHES = "cifar10-batches"


@dataclass(frozen=True)
class DataSource:
    """Resolved `--data`: its kind (FOLDER or BATCHES) and the folder it lives in."""

    kind: str
    root: Path


def _descend(root: Path) -> Path:
    """An archive's tree may sit one folder down (name/train, name/test): go there."""
    found = folders_in(root)
    if not set(found) & set(SPLITS) and len(found) == 1:
        return root / found[0]
    return root


def _from_folder(path: Path) -> DataSource:
    if path.name == CIFAR10_BATCHES:
        return DataSource(BATCHES, path.parent)
    if (path / CIFAR10_BATCHES).is_dir():
        return DataSource(BATCHES, path)
    return DataSource(FOLDER, path)


def resolve(data: str) -> DataSource:
    """Interpret `data`: an existing folder or archive wins over the keyword cifar10[:ROOT]."""
    path = Path(data).expanduser()
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        if not is_archive(path):
            raise HT2Error(
                f"data {data} is a file; give a folder or a .tar.gz of one", params="data"
            )
        return _from_folder(_descend(extract_once(path)))
    if data == CIFAR10_KEYWORD or data.startswith(CIFAR10_KEYWORD + ":"):
        root = data.partition(":")[2]
        return DataSource(BATCHES, Path(root).expanduser() if root else cache_root() / "cifar10")
    raise HT2Error(
        f"data {data} does not exist; give a folder (DIR/train with DIR/test or DIR/val), "
        "a .tar.gz of one, or cifar10[:ROOT] for torchvision's CIFAR-10 download",
        params="data",
    )
