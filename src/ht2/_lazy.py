"""Lazy package exports, so that `import ht2` and `ht2 --help` do not import torch."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose exported names win over same-named submodules: importing the submodule
    `ht2.surgery.apply` must not turn `ht2.surgery.apply` (the function) into a module."""

    def __setattr__(self, name: str, value: Any) -> None:
        exports = self.__dict__.get("_EXPORTS", {})
        if isinstance(value, types.ModuleType) and exports.get(name) == value.__name__:
            value = vars(value).get(name, value)
        super().__setattr__(name, value)


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`: each name in `exports` is imported from
    the module it maps to on first use (PEP 562), then kept as an ordinary attribute. A name
    that maps to `package.name` itself and is not defined there is that subpackage."""
    module_of_package = sys.modules[package]
    module_of_package.__class__ = _LazyPackage

    def __getattr__(name: str) -> Any:
        try:
            source = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module = importlib.import_module(source)
        value = vars(module).get(name, module if source == f"{package}.{name}" else None)
        if value is None:
            value = getattr(module, name)
        setattr(module_of_package, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module_of_package), *exports})

    return __getattr__, __dir__
