"""`ht2 models`: list the names the registry knows."""

from __future__ import annotations

import argparse
from fnmatch import fnmatchcase

from ht2 import models


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list model names",
        description="List the registry's model names "
        "(timm models are reachable as timm/NAME when timm is installed).",
    )
    parser.add_argument("pattern", nargs="?", default="*", help="glob filter (default: *)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for name in models.list_models():
        if fnmatchcase(name, args.pattern):
            print(name)
    return 0
