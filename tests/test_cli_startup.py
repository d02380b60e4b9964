"""The command line starts without importing torch, so `--help` answers at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ht2.cli.main import main

_PROBE = """
import sys
from ht2.cli.main import build_parser
build_parser()
import ht2
ht2.__version__
heavy = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
print(len(heavy))
"""


def test_building_every_parser_imports_no_torch():
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["compress", "--help"], ["finetune", "--help"], ["benchmark", "--help"]],
)
def test_help_runs_without_torch(argv):
    probe = (
        "import sys\nfrom ht2.cli.main import main\n"
        f"code = main({argv!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage: ht2" in done.stdout


def test_lazy_exports_resolve_to_the_functions_not_the_submodules():
    import ht2
    import ht2.experiments.sweep  # noqa: F401  (the submodule shares the function's name)
    import ht2.surgery.apply  # noqa: F401
    from ht2.experiments import sweep
    from ht2.planning import compress
    from ht2.surgery import apply

    assert callable(apply) and apply.__module__ == "ht2.surgery.apply"
    assert callable(sweep) and sweep.__module__ == "ht2.experiments.sweep"
    assert ht2.compress is compress and ht2.apply is apply
    assert ht2.models.create is not None


def test_unknown_attribute_is_an_attribute_error():
    import ht2

    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        ht2.nothing_here  # noqa: B018


def test_held_warnings_are_not_printed_before_a_one_line_error(capsys, monkeypatch):
    import warnings

    from ht2.cli import models_cmd
    from ht2.errors import HT2Error

    def noisy(args):
        warnings.warn("something torch says", UserWarning, stacklevel=1)
        raise HT2Error("the input was bad")

    monkeypatch.setattr(models_cmd, "run", noisy)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["ht2: error: the input was bad"]


def test_held_warnings_are_shown_after_success(capsys, monkeypatch):
    import warnings

    from ht2.cli import models_cmd

    def noisy(args):
        warnings.warn("worth knowing", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(models_cmd, "run", noisy)
    assert main(["models"]) == 0
    assert "worth knowing" in capsys.readouterr().err


def test_subpackages_are_attributes_of_a_plain_import():
    done = subprocess.run(
        [sys.executable, "-c", "import ht2; ht2.surgery.apply; ht2.planning.plan; ht2.io.load"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
