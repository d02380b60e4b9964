"""Every bad input to every subcommand: exit 2, one line on stderr, no traceback, nothing left.

One table of cases. Each runs `main(argv)` in-process in a fresh sandbox (its own cwd, HOME,
XDG_CACHE_HOME and TORCH_HOME) after an optional setup that makes the files the case needs,
and checks the code, the single stderr line, a word the line must hold (the flag or file it
is about, not the wording), and that the sandbox is as the setup left it: no output folder, no
staging folder, no half-written file, no setup file changed. An exception escaping main() fails
the case, as it would show a user a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ht2.cli.main import main
from tests._shared import write_image_tree

MARKER = "payload-ran"  # a pickle payload would create this file in the sandbox's cwd
STAGING = (".tmp", ".old")  # suffixes of ht2's hidden staging folders beside an output


@dataclass(frozen=True)
class Sandbox:
    """Where one case runs: `cwd` (argv paths are relative to it), `home`, and the shared assets."""

    root: Path
    cwd: Path
    home: Path
    assets: Path


Setup = Callable[[Sandbox], None]
Argv = Sequence[str] | Callable[[Sandbox], list[str]]


@dataclass(frozen=True)
class Case:
    id: str
    argv: Argv
    expect: str  # a word the one error line must hold, compared case-insensitively
    setup: tuple[Setup, ...] = ()


# Setups: each makes files in the sandbox from the session's assets.


def model_dir(name: str = "m") -> Setup:
    """A compressed cifar10_resnet20 folder (random init, energy 0.5) at cwd/NAME."""

    def make(box: Sandbox) -> None:
        shutil.copytree(box.assets / "model", box.cwd / name)

    return make


def edited_model(edit: Callable[[dict], None], name: str = "m") -> Setup:
    """A compressed folder whose ht2.json went through `edit` (which changes it in place)."""

    def make(box: Sandbox) -> None:
        model_dir(name)(box)
        manifest = box.cwd / name / "ht2.json"
        data = json.loads(manifest.read_text())
        edit(data)
        manifest.write_text(json.dumps(data))

    return make


def model_file(name: str, change: Callable[[Path], None]) -> Setup:
    """A compressed folder at cwd/m with file NAME changed (or removed) by `change`."""

    def make(box: Sandbox) -> None:
        model_dir("m")(box)
        change(box.cwd / "m" / name)

    return make


def image_data(name: str = "data", **tree) -> Setup:
    """A tiny ImageFolder tree at cwd/NAME: 10 classes x 1 image of 32x32 in train/ and test/."""

    def make(box: Sandbox) -> None:
        if tree:
            write_image_tree(box.cwd / name, **tree)
        else:
            shutil.copytree(box.assets / "data", box.cwd / name)

    return make


def text_file(name: str, text: str = "") -> Setup:
    def make(box: Sandbox) -> None:
        path = box.cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return make


def bytes_file(name: str, data: bytes) -> Setup:
    def make(box: Sandbox) -> None:
        (box.cwd / name).write_bytes(data)

    return make


def folder(name: str) -> Setup:
    def make(box: Sandbox) -> None:
        (box.cwd / name).mkdir(parents=True)

    return make


def asset(name: str, target: str) -> Setup:
    def make(box: Sandbox) -> None:
        shutil.copy(box.assets / name, box.cwd / target)

    return make


def in_home(name: str, text: str = "mine") -> Setup:
    def make(box: Sandbox) -> None:
        (box.home / name).write_text(text)

    return make


class Payload:
    """Unpickling this runs open(path, 'w'): the marker file appears if anyone unpickles it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def pickle_payload(name: str) -> Setup:
    def make(box: Sandbox) -> None:
        torch.save({"state_dict": Payload(box.cwd / MARKER)}, box.cwd / name)

    return make


def hub_cache_payload(model: str) -> Setup:
    """A pickle payload planted in TORCH_HOME under the file name torchvision's weights use."""

    def make(box: Sandbox) -> None:
        import torchvision

        url = torchvision.models.get_model_weights(model).DEFAULT.url
        cached = box.home / ".cache" / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
        cached.parent.mkdir(parents=True)
        torch.save({"state_dict": Payload(box.cwd / MARKER)}, cached)

    return make


def mixed_size_jpegs(box: Sandbox) -> None:
    """32x32 JPEGs for 10 classes, and one 64x48 JPEG (not the first file) among them."""
    import numpy as np
    from PIL import Image

    write_image_tree(box.cwd / "mixed", classes=tuple("abcdefghij"), per_class=2, suffix=".jpg")
    pixels = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(box.cwd / "mixed" / "test" / "j" / "zz-big.jpg")


def unsafe_archive(name: str) -> Setup:
    """A .tar.gz whose one member would land outside the folder it is extracted into."""

    def make(box: Sandbox) -> None:
        with tarfile.open(box.cwd / name, "w:gz") as tar:
            member = tarfile.TarInfo("../escaped.txt")
            member.size = 1
            tar.addfile(member, io.BytesIO(b"x"))

    return make


def truncated_archive(name: str) -> Setup:
    """The first half of a real .tar.gz of the image tree (gzip magic, then a cut stream)."""

    def make(box: Sandbox) -> None:
        whole = box.root / "whole.tar.gz"
        with tarfile.open(whole, "w:gz") as tar:
            tar.add(box.assets / "data", arcname="data")
        (box.cwd / name).write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        whole.unlink()

    return make


# ht2.json edits.


def _plan_entry(name: str) -> Callable[[dict], dict]:
    return lambda data: next(e for e in data["plan"] if e["name"] == name)


def _del_ranks(data: dict) -> None:
    del _plan_entry("layer1.0.conv1")(data)["ranks"]


def _set(path: Sequence[str | int], value) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _entry_set(layer: str, key: str, value) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        _plan_entry(layer)(data)[key] = value

    return edit


def _rank_set(layer: str, rank: str, value: int) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        _plan_entry(layer)(data)["ranks"][rank] = value

    return edit


def _string_entry(data: dict) -> None:
    data["plan"][1] = "layer1.0.conv1"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _remove(path: Path) -> None:
    path.unlink()


def _nan_tensor(path: Path) -> None:
    """model.safetensors with one weight set to NaN (a diverged run, a corrupted file)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(path), metadata={"format": "ht2"})


def _zero_size_classes(path: Path) -> None:
    """A manifest asking for 10**9 classes, with a tensor of shape [10**9, 0] in the file to
    vouch for that count without holding any data."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    tensors["decoy"] = torch.zeros(10**9, 0)
    save_file(tensors, str(path), metadata={"format": "ht2"})
    manifest = path.parent / "ht2.json"
    data = json.loads(manifest.read_text())
    data["arch"]["kwargs"]["num_classes"] = 10**9
    manifest.write_text(json.dumps(data))


def _report_without_layer_fields(path: Path) -> str:
    data = json.loads(path.read_text())
    data["layers"][0] = {"name": data["layers"][0]["name"]}
    return json.dumps(data)


# Command prefixes shared by several cases.

COMPRESS = ["compress", "cifar10_resnet20", "--random-init", "--energy", "0.5"]
FINETUNE = ["finetune", "m", "--data", "no-such-data", "--out", "o"]
TRAIN = ["train", "cifar10_resnet20", "--data", "no-such-data", "--out", "o"]
EVALUATE = ["--data", "data", "--workers", "0", "--batch-size", "16"]
BENCH = ["--batch-sizes", "1", "--repeats", "1", "--warmup", "0"]
SWEEP = ["sweep", "cifar10_resnet20", "--random-init", "--out", "o", "--repeats", "1"]
PRUNE = ["prune", "cifar10_resnet20", "--random-init"]
COMPARE = ["compare", "cifar10_resnet20", "--random-init", "--data", "data", "--out", "o"]


def _compress_out_home(box: Sandbox) -> list[str]:
    return [*COMPRESS, "--force", "--out", str(box.home)]


CASES = [
    # the command line itself
    Case("no-command", [], "command"),
    Case("unknown-command", ["shrink", "cifar10_resnet20"], "shrink"),
    Case("compress-unknown-flag", [*COMPRESS, "--out", "o", "--bogus"], "--bogus"),
    Case("compress-missing-out", COMPRESS, "--out"),
    Case("compress-missing-model", ["compress", "--random-init", "--out", "o"], "MODEL"),
    Case("compress-no-weights-source", ["compress", "cifar10_resnet20", "--out", "o"], "--weights"),
    Case(
        "compress-two-weights-sources",
        ["compress", "cifar10_resnet20", "--random-init", "--pretrained", "--out", "o"],
        "--pretrained",
    ),
    Case(
        "compress-unknown-model", ["compress", "resnt20", "--random-init", "--out", "o"], "resnt20"
    ),
    Case("models-extra-argument", ["models", "a*", "b*"], "b*"),
    # prune
    Case(
        "prune-missing-target",
        ["prune", "cifar10_resnet20", "--random-init", "--out", "o"],
        "--target-params",
    ),
    *[
        Case(
            f"prune-target-params-{value}",
            ["prune", "cifar10_resnet20", "--random-init", "--target-params", value, "--out", "o"],
            expect,
        )
        for value, expect in (("1", "above 1"), ("80", "at most"))
    ],
    Case(
        "prune-two-targets",
        [*PRUNE, "--target-params", "2", "--target-macs", "2", "--out", "o"],
        "--target-macs",
    ),
    # --energy, --target-params, --method and the other rank flags
    *[
        Case(f"compress-energy-{value}", [*COMPRESS, "--energy", value, "--out", "o"], "energy")
        for value in ("0", "1.5", "nan", "-1", "abc", "inf")
    ],
    *[
        Case(
            f"compress-target-params-{value}",
            [
                "compress",
                "cifar10_resnet20",
                "--random-init",
                "--target-params",
                value,
                "--out",
                "o",
            ],
            "--target-params",
        )
        for value in ("0", "-2", "nan", "x", "inf", "1")
    ],
    Case(
        "compress-target-params-out-of-reach",
        ["compress", "cifar10_resnet20", "--random-init", "--target-params", "1e9x", "--out", "o"],
        "reach",
    ),
    Case(
        "compress-target-macs-0",
        ["compress", "cifar10_resnet20", "--random-init", "--target-macs", "0", "--out", "o"],
        "--target-macs",
    ),
    Case(
        "compress-energy-with-target-params",
        [*COMPRESS, "--target-params", "2", "--out", "o"],
        "--energy",
    ),
    Case(
        "compress-target-params-with-target-macs",
        [
            "compress",
            "cifar10_resnet20",
            "--random-init",
            "--target-params",
            "2",
            "--target-macs",
            "2",
            "--out",
            "o",
        ],
        "--target-macs",
    ),
    Case("compress-method-magic", [*COMPRESS, "--method", "magic", "--out", "o"], "--method"),
    Case(
        "compress-rank-rule-magic", [*COMPRESS, "--rank-rule", "magic", "--out", "o"], "--rank-rule"
    ),
    Case(
        "compress-round-ranks-0", [*COMPRESS, "--round-ranks", "0", "--out", "o"], "--round-ranks"
    ),
    Case(
        "compress-refine-sweeps-negative",
        [*COMPRESS, "--refine-sweeps", "-1", "--out", "o"],
        "--refine-sweeps",
    ),
    Case(
        "compress-refine-sweeps-huge",
        [*COMPRESS, "--refine-sweeps", "5000", "--out", "o"],
        "at most 1000",
    ),
    Case(
        "compress-include-matches-nothing",
        [*COMPRESS, "--include", "nomatch*", "--out", "o"],
        "--include",
    ),
    Case(
        "compress-exclude-everything",
        [*COMPRESS, "--exclude", "*", "--out", "o"],
        "--exclude",
    ),
    # --ranks FILE
    Case("compress-ranks-missing", [*COMPRESS, "--ranks", "nope.json", "--out", "o"], "nope.json"),
    Case(
        "compress-ranks-not-json",
        [*COMPRESS, "--ranks", "r.json", "--out", "o"],
        "r.json",
        (text_file("r.json", "{layer1: 3"),),
    ),
    Case(
        "compress-ranks-a-list",
        [*COMPRESS, "--ranks", "r.json", "--out", "o"],
        "r.json",
        (text_file("r.json", "[1, 2]"),),
    ),
    Case(
        "compress-ranks-unknown-layer",
        [*COMPRESS, "--ranks", "r.json", "--out", "o"],
        "nope.conv",
        (text_file("r.json", '{"nope.conv": {"r": 3}}'),),
    ),
    Case(
        "compress-ranks-negative",
        [*COMPRESS, "--ranks", "r.json", "--out", "o"],
        "r1",
        (text_file("r.json", '{"layer1.0.conv1": {"r1": -3, "r13": 4, "r3": 4}}'),),
    ),
    Case(
        "compress-ranks-huge",
        [*COMPRESS, "--ranks", "r.json", "--out", "o"],
        "100000",
        (text_file("r.json", '{"layer1.0.conv1": {"r1": 100000, "r13": 4, "r3": 4}}'),),
    ),
    Case(
        "compress-ranks-unknown-key",
        [*COMPRESS, "--ranks", "r.json", "--out", "o"],
        "r9",
        (text_file("r.json", '{"layer1.0.conv1": {"r9": 3}}'),),
    ),
    Case(
        "compress-ranks-nan",
        [*COMPRESS, "--ranks", "r.json", "--out", "o"],
        "r1",
        (text_file("r.json", '{"layer1.0.conv1": {"r1": NaN, "r13": 4, "r3": 4}}'),),
    ),
    Case(
        "compress-ranks-a-folder",
        [*COMPRESS, "--ranks", "rdir", "--out", "o"],
        "rdir",
        (folder("rdir"),),
    ),
    # --weights FILE
    Case(
        "compress-weights-missing",
        ["compress", "cifar10_resnet20", "--weights", "no.pth", "--out", "o"],
        "no.pth",
    ),
    Case(
        "compress-weights-a-folder",
        ["compress", "cifar10_resnet20", "--weights", "w.pth", "--out", "o"],
        "w.pth",
        (folder("w.pth"),),
    ),
    Case(
        "compress-weights-wrong-suffix",
        ["compress", "cifar10_resnet20", "--weights", "w.txt", "--out", "o"],
        "w.txt",
        (asset("r20.pth", "w.txt"),),
    ),
    Case(
        "compress-weights-corrupt",
        ["compress", "cifar10_resnet20", "--weights", "w.pth", "--out", "o"],
        "w.pth",
        (bytes_file("w.pth", b"PK\x03\x04 not really a zip" * 10),),
    ),
    Case(
        "compress-weights-truncated-safetensors",
        ["compress", "cifar10_resnet20", "--weights", "w.safetensors", "--out", "o"],
        "w.safetensors",
        (bytes_file("w.safetensors", b'\x40\x00\x00\x00\x00\x00\x00\x00{"a":'),),
    ),
    Case(
        "compress-weights-pickle-payload",
        ["compress", "cifar10_resnet20", "--weights", "evil.pth", "--out", "o"],
        "evil.pth",
        (pickle_payload("evil.pth"),),
    ),
    Case(
        "compress-weights-of-another-architecture",
        ["compress", "cifar10_resnet20", "--weights", "r32.pth", "--out", "o"],
        "r32.pth",
        (asset("r32.pth", "r32.pth"),),
    ),
    Case(
        "compress-weights-with-nan",
        ["compress", "cifar10_resnet20", "--weights", "nan.pth", "--out", "o"],
        "layer1.0.conv1",
        (asset("r20-nan.pth", "nan.pth"),),
    ),
    Case(
        "compress-pretrained-hub-cache-payload",
        ["compress", "resnet18", "--pretrained", "--out", "o"],
        "resnet18",
        (hub_cache_payload("resnet18"),),
    ),
    # --out DIR
    Case(
        "compress-out-is-a-file",
        [*COMPRESS, "--out", "taken.txt"],
        "taken.txt",
        (text_file("taken.txt", "mine"),),
    ),
    Case(
        "compress-out-not-empty",
        [*COMPRESS, "--out", "full"],
        "--force",
        (text_file("full/keep.txt", "mine"),),
    ),
    Case(
        "compress-force-out-not-written-by-ht2",
        [*COMPRESS, "--force", "--out", "full"],
        "full",
        (text_file("full/keep.txt", "mine"),),
    ),
    Case(
        "compress-force-out-dot",
        [*COMPRESS, "--force", "--out", "."],
        "--out",
        (text_file("keep.txt", "mine"),),
    ),
    Case(
        "compress-force-out-dotdot",
        [*COMPRESS, "--force", "--out", ".."],
        "--out",
        (text_file("keep.txt", "mine"),),
    ),
    Case("compress-force-out-root", [*COMPRESS, "--force", "--out", "/"], "--out"),
    Case("compress-force-out-home", _compress_out_home, "--out", (in_home(".profile"),)),
    Case(
        "compress-out-under-a-file",
        [*COMPRESS, "--out", "taken.txt/sub"],
        "taken.txt",
        (text_file("taken.txt", "mine"),),
    ),
    Case("compress-out-in-proc", [*COMPRESS, "--out", "/proc/ht2-out"], "/proc/ht2-out"),
    # other compress flags
    Case("compress-calibrate-without-data", [*COMPRESS, "--calibrate", "--out", "o"], "--data"),
    Case(
        "compress-calib-images-negative",
        [*COMPRESS, "--calibrate", "--data", "data", "--calib-images", "-5", "--out", "o"],
        "--calib-images",
        (image_data(),),
    ),
    Case(
        "compress-data-aware-without-data",
        [*COMPRESS, "--data-aware", "refit", "--out", "o"],
        "--data",
    ),
    Case(
        "compress-allocate-sensitivity-without-data",
        [
            "compress",
            "cifar10_resnet20",
            "--random-init",
            "--target-params",
            "2",
            "--allocate",
            "sensitivity",
            "--out",
            "o",
        ],
        "--data",
    ),
    Case(
        "compress-candidates-out-of-range",
        [
            "compress",
            "cifar10_resnet20",
            "--random-init",
            "--target-params",
            "2",
            "--allocate",
            "sensitivity",
            "--data",
            "data",
            "--candidates",
            "0.5,1.5",
            "--out",
            "o",
        ],
        "--candidates",
        (image_data(),),
    ),
    Case(
        "compress-latency-threads-0",
        [*COMPRESS, "--latency-aware", "--threads", "0", "--out", "o"],
        "--threads",
    ),
    Case(
        "compress-plan-only-allow-dense-alone",
        [*COMPRESS, "--plan-only", "--allow-dense", "--out", "o"],
        "--allow-dense lets --latency-aware give size back: add --latency-aware",
    ),
    Case(
        "compress-target-speedup-with-vbmf",
        [*COMPRESS, "--target-speedup", "2", "--rank-rule", "vbmf", "--out", "o"],
        "--target-speedup chooses every layer's ranks; drop --rank-rule vbmf",
    ),
    Case(
        "compress-target-speedup-not-above-1",
        [*COMPRESS, "--target-speedup", "0.5", "--out", "o"],
        "--target-speedup",
    ),
    Case(
        "compress-latency-batch-size-0",
        [*COMPRESS, "--latency-aware", "--batch-size", "0", "--out", "o"],
        "--batch-size",
    ),
    Case(
        "compress-calibrate-data-missing",
        [*COMPRESS, "--calibrate", "--data", "no-such-data", "--out", "o"],
        "no-such-data",
    ),
    # compressed folders with a damaged ht2.json or tensor file
    Case(
        "benchmark-manifest-missing-ranks",
        ["benchmark", "m", *BENCH],
        "ranks",
        (edited_model(_del_ranks),),
    ),
    Case(
        "benchmark-manifest-method-magic",
        ["benchmark", "m", *BENCH],
        "magic",
        (edited_model(_entry_set("layer1.0.conv1", "method", "magic")),),
    ),
    Case(
        "evaluate-manifest-negative-rank",
        ["evaluate", "m", *EVALUATE],
        "rank",
        (edited_model(_rank_set("layer1.0.conv1", "r1", -3)), image_data()),
    ),
    Case(
        "export-manifest-string-plan-entry",
        ["export", "m", "--out", "o"],
        "plan",
        (edited_model(_string_entry),),
    ),
    Case(
        "benchmark-manifest-num-classes-negative",
        ["benchmark", "m", *BENCH],
        "num_classes",
        (edited_model(_set(["arch", "kwargs", "num_classes"], -5)),),
    ),
    Case(
        "evaluate-manifest-rank-100000",
        ["evaluate", "m", *EVALUATE],
        "100000",
        (edited_model(_rank_set("layer1.0.conv1", "r13", 100000)), image_data()),
    ),
    Case(
        "export-manifest-unknown-layer",
        ["export", "m", "--out", "o"],
        "nope",
        (edited_model(_entry_set("layer1.0.conv1", "name", "layer1.0.nope")),),
    ),
    Case(
        "benchmark-manifest-layer-path-components",
        ["benchmark", "m", *BENCH],
        "../x",
        (edited_model(_entry_set("layer1.0.conv1", "name", "../x")),),
    ),
    Case(
        "calibrate-manifest-newer-format",
        ["calibrate", "m", "--data", "data", "--workers", "0", "--out", "o"],
        "version",
        (edited_model(_set(["format_version"], 99)), image_data()),
    ),
    Case(
        "benchmark-manifest-pruned-not-a-list",
        ["benchmark", "m", *BENCH],
        '"pruned"',
        (edited_model(_set(["pruned"], "layer1.0.conv1")),),
    ),
    Case(
        "benchmark-manifest-pruned-not-a-conv",
        ["benchmark", "m", *BENCH],
        "not a Conv2d",
        (
            edited_model(
                _set(
                    ["pruned"],
                    [{"producer": "linear", "norm": None, "consumer": "linear", "keep": [0]}],
                )
            ),
        ),
    ),
    Case(
        "benchmark-manifest-not-json",
        ["benchmark", "m", *BENCH],
        "ht2.json",
        (model_file("ht2.json", lambda p: p.write_text("{not json")),),
    ),
    Case(
        "export-model-safetensors-missing",
        ["export", "m", "--out", "o"],
        "model.safetensors",
        (model_file("model.safetensors", _remove),),
    ),
    Case(
        "evaluate-model-safetensors-truncated",
        ["evaluate", "m", *EVALUATE],
        "model.safetensors",
        (model_file("model.safetensors", _truncate), image_data()),
    ),
    # evaluate: sources, data and flags
    Case("evaluate-missing-data-flag", ["evaluate", "m"], "--data", (model_dir(),)),
    Case("evaluate-unknown-model", ["evaluate", "resnt20", "--pretrained", *EVALUATE], "resnt20"),
    Case(
        "evaluate-model-without-weights", ["evaluate", "cifar10_resnet20", *EVALUATE], "--weights"
    ),
    Case(
        "evaluate-folder-with-pretrained",
        ["evaluate", "m", "--pretrained", *EVALUATE],
        "--pretrained",
        (model_dir(), image_data()),
    ),
    Case(
        "evaluate-folder-without-manifest",
        ["evaluate", "notamodel", *EVALUATE],
        "ht2.json",
        (folder("notamodel"), image_data()),
    ),
    Case(
        "evaluate-data-missing",
        ["evaluate", "m", "--data", "no-such-data"],
        "no-such-data",
        (model_dir(),),
    ),
    Case(
        "evaluate-data-empty-folder",
        ["evaluate", "m", "--data", "emptydata", "--workers", "0"],
        "emptydata",
        (model_dir(), folder("emptydata")),
    ),
    Case(
        "evaluate-data-without-splits",
        ["evaluate", "m", "--data", "flat", "--workers", "0"],
        "flat",
        (model_dir(), image_data("flat", splits=("images",), classes=("a", "b"), per_class=1)),
    ),
    Case(
        "evaluate-data-one-class",
        ["evaluate", "m", "--data", "one", "--workers", "0"],
        "class",
        (model_dir(), image_data("one", classes=("a",), per_class=2)),
    ),
    Case(
        "evaluate-data-mixed-image-sizes",
        ["evaluate", "m", "--data", "mixed", "--workers", "0", "--batch-size", "32"],
        "zz-big.jpg",
        (model_dir(), mixed_size_jpegs),
    ),
    Case(
        "evaluate-data-tar-gz-not-gzip",
        ["evaluate", "m", "--data", "data.tar.gz", "--workers", "0"],
        "data.tar.gz",
        (model_dir(), text_file("data.tar.gz", "this is not an archive\n" * 20)),
    ),
    Case(
        "evaluate-data-tar-gz-truncated",
        ["evaluate", "m", "--data", "cut.tar.gz", "--workers", "0"],
        "cut.tar.gz",
        (model_dir(), truncated_archive("cut.tar.gz")),
    ),
    Case(
        "evaluate-data-tar-gz-unsafe-member",
        ["evaluate", "m", "--data", "evil.tar.gz", "--workers", "0"],
        "evil.tar.gz",
        (model_dir(), unsafe_archive("evil.tar.gz")),
    ),
    Case(
        "evaluate-split-unknown",
        ["evaluate", "m", *EVALUATE, "--split", "holdout"],
        "--split",
        (model_dir(), image_data()),
    ),
    Case(
        "evaluate-unknown-dtype-flag",
        ["evaluate", "m", *EVALUATE, "--dtype", "fp16"],
        "--dtype",
        (model_dir(),),
    ),
    Case(
        "evaluate-device-tpu",
        ["evaluate", "m", *EVALUATE, "--device", "tpu"],
        "--device",
        (model_dir(),),
    ),
    Case(
        "evaluate-batch-size-0",
        ["evaluate", "m", "--data", "data", "--batch-size", "0"],
        "--batch-size",
        (model_dir(), image_data()),
    ),
    Case(
        "evaluate-workers-negative",
        ["evaluate", "m", "--data", "data", "--workers", "-1"],
        "--workers",
        (model_dir(), image_data()),
    ),
    Case(
        "evaluate-limit-0",
        ["evaluate", "m", *EVALUATE, "--limit", "0"],
        "--limit",
        (model_dir(), image_data()),
    ),
    Case(
        "evaluate-folder-with-weights",
        ["evaluate", "m", "--weights", "r20.pth", *EVALUATE],
        "--weights",
        (model_dir(), asset("r20.pth", "r20.pth"), image_data()),
    ),
    # calibrate
    Case(
        "calibrate-images-0",
        ["calibrate", "m", "--data", "data", "--images", "0", "--workers", "0", "--out", "o"],
        "--images",
        (model_dir(), image_data()),
    ),
    Case(
        "calibrate-images-negative",
        ["calibrate", "m", "--data", "data", "--images", "-3", "--workers", "0", "--out", "o"],
        "--images",
        (model_dir(), image_data()),
    ),
    Case(
        "calibrate-batch-size-0",
        ["calibrate", "m", "--data", "data", "--batch-size", "0", "--workers", "0", "--out", "o"],
        "--batch-size",
        (model_dir(), image_data()),
    ),
    Case(
        "calibrate-data-one-class",
        ["calibrate", "m", "--data", "one", "--workers", "0", "--out", "o"],
        "class",
        (model_dir(), image_data("one", classes=("a",), per_class=2)),
    ),
    Case(
        "calibrate-data-missing",
        ["calibrate", "m", "--data", "no-such-data", "--out", "o"],
        "no-such-data",
        (model_dir(),),
    ),
    Case(
        "calibrate-source-missing",
        ["calibrate", "no-such-model", "--data", "data", "--out", "o"],
        "no-such-model",
        (image_data(),),
    ),
    Case(
        "calibrate-out-is-a-file",
        ["calibrate", "m", "--data", "data", "--out", "taken.txt"],
        "taken.txt",
        (model_dir(), image_data(), text_file("taken.txt", "mine")),
    ),
    # finetune and train: numeric flags are refused before any data is read
    *[
        Case(f"finetune-{flag[2:]}-{value}", [*FINETUNE, flag, value], flag, (model_dir(),))
        for flag, value in (
            ("--lr", "-1"),
            ("--lr", "nan"),
            ("--lr", "inf"),
            ("--epochs", "0"),
            ("--epochs", "-1"),
            ("--batch-size", "0"),
            ("--wd", "-1"),
            ("--momentum", "nan"),
            ("--max-steps", "0"),
            ("--calib-images", "-1"),
            ("--label-smoothing", "nan"),
        )
    ],
    Case(
        "finetune-resume-and-force", [*FINETUNE, "--resume", "--force"], "--resume", (model_dir(),)
    ),
    Case(
        "finetune-source-missing",
        ["finetune", "no-such-model", "--data", "no-such-data", "--out", "o"],
        "no-such-model",
    ),
    Case(
        "finetune-distill-without-teacher",
        ["finetune", "m", "--data", "data", "--workers", "0", "--distill", "--out", "o"],
        "--teacher-weights",
        (model_dir(), image_data()),
    ),
    Case(
        "finetune-teacher-weights-missing",
        [*FINETUNE, "--distill", "--teacher-weights", "missing.pth"],
        "--teacher-weights missing.pth is not a file",
        (model_dir(),),
    ),
    Case(
        "finetune-out-is-a-file",
        ["finetune", "m", "--data", "data", "--workers", "0", "--out", "taken.txt"],
        "taken.txt",
        (model_dir(), image_data(), text_file("taken.txt", "mine")),
    ),
    *[
        Case(f"train-{flag[2:]}-{value}", [*TRAIN, flag, value], flag)
        for flag, value in (
            ("--lr", "nan"),
            ("--lr", "-0.1"),
            ("--epochs", "0"),
            ("--batch-size", "-8"),
            ("--wd", "inf"),
            ("--gamma", "-1"),
        )
    ],
    Case(
        "train-unknown-model",
        ["train", "resnt20", "--data", "no-such-data", "--out", "o"],
        "resnt20",
    ),
    Case("train-schedule-unknown", [*TRAIN, "--schedule", "cosine"], "--schedule"),
    Case("train-milestones-not-numbers", [*TRAIN, "--milestones", "a,b"], "--milestones"),
    Case("train-weights-missing", [*TRAIN, "--weights", "no.pth"], "no.pth"),
    Case(
        "train-data-missing",
        ["train", "cifar10_resnet20", "--data", "no-such-data", "--out", "o"],
        "no-such-data",
    ),
    Case(
        "train-out-is-a-file",
        ["train", "cifar10_resnet20", "--data", "data", "--workers", "0", "--out", "taken.txt"],
        "taken.txt",
        (image_data(), text_file("taken.txt", "mine")),
    ),
    Case(
        "train-resume-without-checkpoint",
        [
            "train",
            "cifar10_resnet20",
            "--data",
            "data",
            "--workers",
            "0",
            "--resume",
            "--out",
            "new",
        ],
        "new",
        (image_data(),),
    ),
    # sweep and compare
    Case("sweep-energies-out-of-range", [*SWEEP, "--energies", "0.5,1.5"], "1.5"),
    Case("sweep-energies-not-numbers", [*SWEEP, "--energies", "abc"], "abc"),
    Case("sweep-methods-magic", [*SWEEP, "--methods", "ht2,magic"], "magic"),
    Case("sweep-batch-sizes-0", [*SWEEP, "--batch-sizes", "0"], "--batch-sizes"),
    Case("sweep-threads-0", [*SWEEP, "--threads", "0"], "--threads"),
    Case("sweep-repeats-0", [*SWEEP[:-2], "--repeats", "0"], "--repeats"),
    Case("sweep-limit-0", [*SWEEP, "--data", "data", "--limit", "0"], "--limit", (image_data(),)),
    Case("compare-no-target", COMPARE, "--target-params", (image_data(),)),
    Case(
        "compare-target-params-0",
        [*COMPARE, "--target-params", "0"],
        "--target-params",
        (image_data(),),
    ),
    Case(
        "compare-methods-magic",
        [*COMPARE, "--target-params", "2", "--methods", "magic"],
        "magic",
        (image_data(),),
    ),
    Case(
        "compare-allocations-magic",
        [*COMPARE, "--target-params", "2", "--allocations", "magic"],
        "magic",
        (image_data(),),
    ),
    Case(
        "compare-eval-images-0",
        [*COMPARE, "--target-params", "2", "--eval-images", "0"],
        "--eval-images",
        (image_data(),),
    ),
    Case(
        "compare-calib-images-negative",
        [*COMPARE, "--target-params", "2", "--calib-images", "-1"],
        "--calib-images",
        (image_data(),),
    ),
    Case(
        "compare-data-missing",
        [
            "compare",
            "cifar10_resnet20",
            "--random-init",
            "--data",
            "no-such-data",
            "--target-params",
            "2",
            "--out",
            "o",
        ],
        "no-such-data",
    ),
    # benchmark
    *[
        Case(
            f"benchmark-batch-sizes-{value}",
            ["benchmark", "cifar10_resnet20", "--batch-sizes", value],
            "--batch-sizes",
        )
        for value in ("0", "a,b", "-1", "1,,2")
    ],
    *[
        Case(
            f"benchmark-threads-{value}",
            ["benchmark", "cifar10_resnet20", *BENCH, "--threads", value],
            "--threads",
        )
        for value in ("0", "-1")
    ],
    Case(
        "benchmark-repeats-0",
        ["benchmark", "cifar10_resnet20", "--batch-sizes", "1", "--repeats", "0"],
        "--repeats",
    ),
    Case(
        "benchmark-warmup-negative",
        ["benchmark", "cifar10_resnet20", "--batch-sizes", "1", "--warmup", "-1"],
        "--warmup",
    ),
    Case(
        "benchmark-runtime-unknown",
        ["benchmark", "cifar10_resnet20", *BENCH, "--runtime", "tensorrt"],
        "--runtime",
    ),
    Case(
        "benchmark-openvino-channels-last",
        ["benchmark", "cifar10_resnet20", *BENCH, "--runtime", "openvino", "--channels-last"],
        "openvino",
    ),
    Case("benchmark-unknown-model", ["benchmark", "resnt20", *BENCH], "resnt20"),
    Case(
        "benchmark-against-unknown",
        ["benchmark", "cifar10_resnet20", *BENCH, "--against", "resnt20"],
        "resnt20",
    ),
    Case(
        "benchmark-onnx-missing",
        ["benchmark", "cifar10_resnet20", *BENCH, "--onnx", "no.onnx"],
        "no.onnx",
    ),
    Case(
        "benchmark-per-layer-on-dense-model",
        ["benchmark", "cifar10_resnet20", *BENCH, "--per-layer"],
        "--per-layer",
    ),
    Case(
        "benchmark-folder-with-weights",
        ["benchmark", "m", *BENCH, "--weights", "r20.pth"],
        "--weights",
        (model_dir(), asset("r20.pth", "r20.pth")),
    ),
    Case(
        "benchmark-weights-corrupt",
        ["benchmark", "cifar10_resnet20", *BENCH, "--weights", "w.pth"],
        "w.pth",
        (text_file("w.pth", "garbage"),),
    ),
    Case(
        "benchmark-against-another-input-size",
        ["benchmark", "m", *BENCH, "--against", "resnet18"],
        "--against",
        (model_dir(),),
    ),
    # export
    Case(
        "export-format-unknown",
        ["export", "m", "--format", "tflite", "--out", "o"],
        "--format",
        (model_dir(),),
    ),
    Case(
        "export-opset-0",
        ["export", "m", "--format", "onnx", "--opset", "0", "--out", "o"],
        "--opset",
        (model_dir(),),
    ),
    Case(
        "export-opset-beyond-torch",
        ["export", "m", "--format", "onnx", "--opset", "99", "--out", "o"],
        "--opset",
        (model_dir(),),
    ),
    *[
        Case(
            f"export-dtype-{dtype}",
            ["export", "m", "--format", "onnx", "--dtype", dtype, "--out", "o"],
            "--dtype",
            (model_dir(),),
        )
        for dtype in ("int8", "bfloat16")
    ],
    Case(
        "export-dtype-without-onnx",
        ["export", "m", "--dtype", "float16", "--out", "o"],
        "--dtype",
        (model_dir(),),
    ),
    Case("export-source-missing", ["export", "no-such-model", "--out", "o"], "no-such-model"),
    Case(
        "export-source-not-a-model",
        ["export", "notamodel", "--out", "o"],
        "notamodel",
        (folder("notamodel"),),
    ),
    Case(
        "export-out-is-a-file",
        ["export", "m", "--out", "taken.txt"],
        "taken.txt",
        (model_dir(), text_file("taken.txt", "mine")),
    ),
    Case(
        "export-out-not-empty",
        ["export", "m", "--out", "full"],
        "--force",
        (model_dir(), text_file("full/keep.txt", "mine")),
    ),
    # report
    Case(
        "report-folder-without-report",
        ["report", "m"],
        "report.json",
        (model_file("report.json", _remove),),
    ),
    Case("report-folder-missing", ["report", "no-such-model"], "no-such-model"),
    Case(
        "report-report-not-json",
        ["report", "m"],
        "report.json",
        (model_file("report.json", lambda p: p.write_text("{oops")),),
    ),
    Case(
        "report-report-a-list",
        ["report", "m"],
        "report.json",
        (model_file("report.json", lambda p: p.write_text("[1, 2]")),),
    ),
    Case(
        "report-report-empty-object",
        ["report", "m"],
        "report.json",
        (model_file("report.json", lambda p: p.write_text("{}")),),
    ),
    Case(
        "report-markdown-and-json",
        ["report", "m", "--markdown", "--json"],
        "--json",
        (model_dir(),),
    ),
    Case(
        "report-report-layer-missing-fields",
        ["report", "m"],
        "lacks the fields",
        (model_file("report.json", lambda p: p.write_text(_report_without_layer_fields(p))),),
    ),
    Case("models-no-match", ["models", "zzz*"], "zzz*"),
    Case("train-seed-beyond-64-bits", [*TRAIN, "--seed", "18446744073709551615"], "--seed"),
    Case("train-seed-negative", [*TRAIN, "--seed", "-1"], "--seed"),
    Case("train-milestones-decreasing", [*TRAIN, "--milestones", "5,3"], "--milestones"),
    Case("train-milestones-negative", [*TRAIN, "--milestones", "-3"], "--milestones"),
    Case(
        "benchmark-threads-beyond-int",
        ["benchmark", "cifar10_resnet20", *BENCH, "--threads", "99999999999999999999999"],
        "--threads",
    ),
    Case(
        "benchmark-batch-size-beyond-int",
        [
            "benchmark",
            "cifar10_resnet20",
            "--batch-sizes",
            "99999999999999999999",
            "--repeats",
            "1",
        ],
        "--batch-sizes",
    ),
    Case(
        "compare-target-params-inf",
        ["compare", "cifar10_resnet20", "--random-init", "--target-params", "inf", "--out", "o"],
        "--target-params",
    ),
    Case(
        "export-manifest-classes-as-zero-size-tensor",
        ["export", "m", "--out", "x"],
        "num_classes",
        (model_file("model.safetensors", _zero_size_classes),),
    ),
    Case(
        "compress-weights-random-bytes",
        ["compress", "cifar10_resnet20", "--weights", "w.pth", "--out", "o"],
        "corrupt",
        (bytes_file("w.pth", bytes(range(256)) * 3),),
    ),
    Case(
        "export-onnx-opset-above-supported",
        ["export", "m", "--format", "onnx", "--opset", "99", "--out", "x"],
        "opset",
        (model_dir(),),
    ),
    Case(
        "evaluate-folder-with-nan-tensors",
        ["evaluate", "m", *EVALUATE],
        "nan",
        (model_file("model.safetensors", _nan_tensor), image_data()),
    ),
    Case(
        "benchmark-folder-with-nan-tensors",
        ["benchmark", "m", *BENCH],
        "nan",
        (model_file("model.safetensors", _nan_tensor),),
    ),
    Case(
        "evaluate-weights-with-nan",
        ["evaluate", "cifar10_resnet20", "--weights", "nan.pth", *EVALUATE],
        "layer1.0.conv1.weight",
        (asset("r20-nan.pth", "nan.pth"), image_data()),
    ),
]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _counted(path: Path, cache: Path) -> bool:
    """Whether `path` counts in a listing: under the cache only ht2's and torch's files do.

    Making a cache folder (such as an empty hub/checkpoints) is not leaving output behind, nor
    is a third-party library's own cache file (onnxruntime writes one when imported); a file
    in ht2's or torch's cache, or a hidden (staging) folder, is.
    """
    if not path.is_relative_to(cache) or path == cache:
        return not path.is_relative_to(cache)
    top = path.relative_to(cache).parts[0]
    if path.is_dir() and not path.is_symlink():
        return path.name.startswith(".") and top in ("ht2", "torch")
    return top in ("ht2", "torch")


def _listing(root: Path, cache: Path) -> dict[str, str]:
    """Every folder and file under `root` (a file with its content hash), symlinks unfollowed."""
    found: dict[str, str] = {}
    for folder_path, folders, files in os.walk(root):
        for name in [*folders, *files]:
            path = Path(folder_path) / name
            if not _counted(path, cache):
                continue
            if path.is_symlink():
                kind = "link"
            elif path.is_dir():
                kind = "folder"
            else:
                kind = _digest(path)
            found[str(path.relative_to(root))] = kind
    return found


def _staging_in_root() -> set[str]:
    return {name for name in os.listdir("/") if name.startswith(".") and name.endswith(STAGING)}


def _left_in_root(before: set[str]) -> list[str]:
    """New staging folders in / (from `--out /`), removed once seen."""
    new = sorted(_staging_in_root() - before)
    for name in new:
        shutil.rmtree(Path("/") / name, ignore_errors=True)
    return new


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once: a compressed ResNet-20 folder, state dicts, a 10-class 32x32 image tree."""
    import ht2

    root = tmp_path_factory.mktemp("bad-input-assets")
    out = str(root / "model")
    assert main([*COMPRESS, "--json", "--out", out]) == 0
    state = ht2.models.create("cifar10_resnet20").state_dict()
    torch.save(state, root / "r20.pth")
    state["layer1.0.conv1.weight"] = torch.full_like(state["layer1.0.conv1.weight"], float("nan"))
    torch.save(state, root / "r20-nan.pth")
    torch.save(ht2.models.create("cifar10_resnet32").state_dict(), root / "r32.pth")
    write_image_tree(root / "data", classes=tuple("abcdefghij"), per_class=1)
    return root


@pytest.fixture
def sandbox(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """tmp_path/box/{work,home}: work is the cwd, home is HOME with its caches inside."""
    box = Sandbox(tmp_path, tmp_path / "box" / "work", tmp_path / "box" / "home", assets)
    box.cwd.mkdir(parents=True)
    box.home.mkdir()
    monkeypatch.chdir(box.cwd)
    monkeypatch.setenv("HOME", str(box.home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(box.home / ".cache"))
    monkeypatch.setenv("TORCH_HOME", str(box.home / ".cache" / "torch"))
    monkeypatch.delenv("HT2_CACHE_DIR", raising=False)
    threads = torch.get_num_threads()
    yield box
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    case: Case, sandbox: Sandbox, capfd: pytest.CaptureFixture[str]
) -> None:
    """capfd, not capsys: what C++ code or a child process writes to fd 2 reaches the user too."""
    for make in case.setup:
        make(sandbox)
    argv = case.argv(sandbox) if callable(case.argv) else list(case.argv)
    cache = sandbox.home / ".cache"
    before = _listing(sandbox.root, cache)
    root_before = _staging_in_root()
    capfd.readouterr()

    try:
        code = main(argv)
    except (Exception, SystemExit) as error:  # what a user would see as a traceback
        code, escaped = None, "".join(traceback.format_exception(error))
    else:
        escaped = ""

    err = capfd.readouterr().err + escaped
    lines = err.strip().splitlines()
    problems = []
    if (sandbox.cwd / MARKER).exists():
        problems.append("a pickle payload ran")
    if escaped:
        problems.append(f"exception escaped main(): {escaped.strip().splitlines()[-1]}")
    elif code != 2:
        problems.append(f"exit code {code}")
    if escaped:
        pass
    elif "Traceback" in err or len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines")
    elif case.expect.lower() not in lines[0].lower():
        problems.append(f"{case.expect!r} not in the error")
    left = _left_in_root(root_before)
    after = _listing(sandbox.root, cache)
    changed = sorted(set(before.items()) ^ set(after.items()))
    if left or changed:
        problems.append(f"left behind or changed: {left + [path for path, _ in changed][:6]}")
    assert not problems, f"{'; '.join(problems)}\nstderr: {err.strip()[-1500:]}"


def test_the_readme_counts_these_cases() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"holds {len(CASES)} such cases" in readme
