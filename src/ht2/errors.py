"""The one exception type for bad user input (the CLI turns it into a one-line error), and what
reading a JSON file can raise besides."""

from __future__ import annotations

from collections.abc import Iterable

# What json.loads raises on a file that is not good JSON: bad syntax or UTF-8 (ValueError), a
# number of more than 4,300 digits (ValueError), or nesting deeper than the stack (RecursionError).
BAD_JSON = (ValueError, RecursionError)


class HT2Error(Exception):
    """A problem with what the user asked for or gave (a file, a name, a value).

    The message is a complete sentence for the user: what was wrong and what to do. It names
    the library's parameters (`calib_images must be at least 1, got 0`), and `params` lists
    the names it uses, each as written in the message (a bare name, or a setting such as
    `weights=None`), so that the command line can put its own flags in their place.
    """

    def __init__(self, message: str, *, params: str | Iterable[str] = ()) -> None:
        super().__init__(message)
        self.params: tuple[str, ...] = (params,) if isinstance(params, str) else tuple(params)
