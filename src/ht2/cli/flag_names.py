"""Library errors name parameters (`calib_images`); the command line shows its flags
(`--calib-images`) in their place, so that each audience reads its own spelling."""

from __future__ import annotations

import re

from ht2.errors import HT2Error

# Parameters, or settings as library messages write them, whose flag is not --name-with-dashes.
FLAGS = {
    "overwrite=True": "--force",
    "directory": "--out",
    "bn_aware": "--no-bn-aware",
    "refit_dense": "--no-refit-dense",
    "keep_if_larger": "--no-keep-if-larger",
    "in_memory=False": "--no-in-memory",
    "in_memory=True": "--in-memory",
    "weights=FILE": "--weights FILE",
    "data=PATH": "--data PATH",
    "calibrate=True": "--calibrate",
    "weights=None": "--random-init",
    "sensitivity_images": "--calib-images",
    "data_aware_images": "--calib-images",
    "calibrate_images": "--calib-images",
    "layer_ranks": "--ranks",
    "teacher_weights=FILE": "--teacher-weights FILE",
    "distill=True": "--distill",
}


def flag_for(param: str) -> str:
    """The command-line spelling of a parameter: FLAGS, else --name-with-dashes."""
    return FLAGS.get(param, "--" + param.replace("_", "-"))


def with_flags(error: HT2Error) -> str:
    """`error`'s message with each parameter it names written as its flag.

    A name is replaced where it stands as a word of its own, not inside a path or a longer
    name; right after itself (`data data`: a value that happens to be spelt like the name)
    it is left alone.
    """
    text = str(error)
    for param in sorted(error.params, key=len, reverse=True):
        flag = flag_for(param)
        pattern = re.compile(rf"(?<![\w./~\\-]){re.escape(param)}(?![\w/\\-])")

        def replace(match: re.Match[str], flag: str = flag, param: str = param) -> str:
            value = match.string[: match.start()].endswith(param + " ")
            return param if value else flag

        text = pattern.sub(replace, text)
    return text
