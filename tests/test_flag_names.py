"""Library errors name parameters; `ht2` shows its flags in their place."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from ht2.cli.flag_names import flag_for, with_flags
from ht2.cli.main import main
from ht2.data.loader import check_batch_size
from ht2.errors import HT2Error
from ht2.io import check_output_dir
from ht2.recipes.recipe import get_recipe


def _full(folder: Path) -> Path:
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    return folder


def test_a_library_error_names_the_parameter() -> None:
    with pytest.raises(HT2Error) as caught:
        check_batch_size(0)
    assert str(caught.value) == "batch_size must be a positive number of images, not 0"
    assert caught.value.params == ("batch_size",)


def test_a_library_error_names_the_setting_to_change(tmp_path: Path) -> None:
    with pytest.raises(HT2Error, match="not empty; use overwrite=True to replace it$"):
        check_output_dir(_full(tmp_path / "out"), overwrite=False)
    with pytest.raises(HT2Error, match=r"^calibrate_images must be at least 1, not 0$"):
        get_recipe("paper").with_choices(calibrate_images=0).check(False, False)


def test_flags_take_the_place_of_parameters() -> None:
    assert flag_for("calib_images") == "--calib-images"
    assert flag_for("overwrite=True") == "--force"
    error = HT2Error(
        "rank_from and refit_dense only apply with data_aware",
        params=("rank_from", "refit_dense", "data_aware"),
    )
    assert with_flags(error) == "--rank-from and --no-refit-dense only apply with --data-aware"


def test_names_inside_paths_and_values_are_left_alone() -> None:
    error = HT2Error("data data/x/data is a file; so is data data", params="data")
    assert with_flags(error) == "--data data/x/data is a file; so is --data data"
    untouched = HT2Error("the data set holds no images")
    assert with_flags(untouched) == "the data set holds no images"


def test_params_survive_pickling() -> None:
    error = pickle.loads(pickle.dumps(HT2Error("lr too high", params="lr")))
    assert (str(error), error.params) == ("lr too high", ("lr",))


def test_the_cli_prints_flags(tmp_path: Path, capsys) -> None:
    base = ["sweep", "cifar10_resnet20", "--random-init"]
    assert main([*base, "--out", str(_full(tmp_path / "taken"))]) == 2
    assert capsys.readouterr().err.strip().endswith("not empty; use --force to replace it")
    missing = str(tmp_path / "nowhere")
    assert main([*base, "--data", missing, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ht2: error: --data {missing} does not exist; give a folder")
    assert len(err.strip().splitlines()) == 1
