"""`ht2 models`: list the names the registry knows."""

from __future__ import annotations

import argparse
from fnmatch import fnmatchcase

from ht2 import models
from ht2.errors import HT2Error


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
    names = [name for name in models.list_models() if fnmatchcase(name, args.pattern)]
    if not names:
        raise HT2Error(f"no model name matches '{args.pattern}' (`ht2 models` lists them all)")
    print("\n".join(names))
    return 0
