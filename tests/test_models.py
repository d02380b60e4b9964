"""Tests of ht2.models: names, architectures, weight files and pretrained loading (all offline)."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import ht2.models as models
from ht2.errors import HT2Error
from ht2.models import bundled
from ht2.models.shortcut import ShortcutA
from tests._shared import RESNET_WEIGHTS, shared_file

OWN = [
    "cifar10_resnet20",
    "cifar10_resnet32",
    "cifar10_resnet44",
    "cifar10_resnet56",
    "cifar10_resnet110",
    "cifar10_densenet40",
    "imagenet_alexnet",
]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _assert_same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(state)
    for key, value in state.items():
        assert torch.equal(got[key], value), key


@pytest.mark.parametrize(
    ("name", "count"), [("cifar10_resnet20", 269_722), ("cifar10_resnet56", 853_018)]
)
def test_cifar_resnet_parameter_counts(name: str, count: int) -> None:
    assert _n_params(models.create(name)) == count


@pytest.mark.parametrize("name", OWN)
def test_own_models_forward_at_their_input_size(name: str) -> None:
    entry = models.get_entry(name)
    model = models.create(name)
    assert not model.training
    with torch.no_grad():
        out = model(torch.randn(2, *entry.input_size))
    assert out.shape == (2, entry.num_classes)
    assert torch.isfinite(out).all()


def test_entries_describe_inputs() -> None:
    resnet = models.get_entry("cifar10_resnet20")
    assert (resnet.input_size, resnet.family, resnet.resize) == ((3, 32, 32), "cifar10", None)
    assert resnet.mean == (0.485, 0.456, 0.406) and resnet.std == (0.229, 0.224, 0.225)
    dense = models.get_entry("cifar10_densenet40")
    assert dense.mean == (0.4914, 0.4822, 0.4465) and dense.std == (0.2470, 0.2435, 0.2616)
    alex = models.get_entry("imagenet_alexnet")
    assert (alex.input_size, alex.resize, alex.num_classes) == ((3, 227, 227), 256, 1000)
    tv = models.get_entry("resnet18")
    assert (tv.input_size, tv.resize, tv.family) == ((3, 224, 224), 256, "imagenet")
    inception = models.get_entry("inception_v3")
    assert (inception.input_size, inception.resize) == ((3, 299, 299), 342)


def test_cifar_resnet_structure_and_shortcut() -> None:
    model = models.create("cifar10_resnet20")
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == 3
    first = model.layer2[0]
    assert first.conv1.stride == (2, 2) and isinstance(first.shortcut, ShortcutA)
    assert list(first.shortcut.parameters()) == []
    x = torch.randn(1, 16, 32, 32)
    y = ShortcutA(32)(x)
    assert y.shape == (1, 32, 16, 16)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_densenet_widths_and_init() -> None:
    model = models.create("cifar10_densenet40")
    assert model.linear.in_features == 456
    assert torch.all(model.bn.weight == 0.5) and torch.all(model.bn.bias == 0)
    assert torch.all(model.linear.bias == 0)


@pytest.mark.parametrize("name", sorted(RESNET_WEIGHTS))
def test_real_weights_load_exactly(name: str) -> None:
    path = shared_file(RESNET_WEIGHTS[name])
    raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    expected = {key.removeprefix("module."): value for key, value in raw.items()}
    model = models.create(name, weights=path)
    got = model.state_dict()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    # These old files lack BatchNorm's num_batches_tracked, which loading fills in.
    assert all(key.endswith("num_batches_tracked") for key in got.keys() - expected.keys())
    assert models.read_state_dict(path).keys() == expected.keys()
    assert not model.training


def test_aliases_resolve_to_canonical_names() -> None:
    assert models.get_entry("imagenet_vgg16").name == "vgg16_bn"
    assert models.get_entry("imagenet_googlenet").name == "googlenet"
    assert models.get_entry("imagenet_resnet50").name == "resnet50"
    model = models.create("imagenet_resnet18")
    assert model.ht2_arch == {"name": "resnet18", "kwargs": {}, "weights": None}
    assert model.fc.out_features == 1000


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(HT2Error) as info:
        models.get_entry("resnt18")
    message = str(info.value)
    assert message.startswith("unknown model 'resnt18'; did you mean: resnet18")
    assert "`ht2 models`" in message and "\n" not in message
    with pytest.raises(HT2Error, match="unknown model 'zzqqxx'; \\(see `ht2 models`\\)"):
        models.create("zzqqxx")


def test_list_models() -> None:
    names = models.list_models()
    assert names == sorted(names)
    for name in [*OWN, "resnet18", "googlenet", "vgg16_bn", "inception_v3"]:
        assert name in names
    assert "imagenet_resnet18" not in names
    assert not any(name.startswith("timm/") for name in names)


def test_ht2_arch_rebuilds_the_same_architecture() -> None:
    model = models.create("cifar10_resnet32", num_classes=7)
    assert model.ht2_arch == {
        "name": "cifar10_resnet32",
        "kwargs": {"num_classes": 7},
        "weights": None,
    }
    rebuilt = models.create(model.ht2_arch["name"], **model.ht2_arch["kwargs"])
    assert rebuilt.ht2_arch == model.ht2_arch
    shapes = {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert shapes == {k: v.shape for k, v in model.state_dict().items()}


def test_bad_options_raise_ht2error() -> None:
    with pytest.raises(HT2Error, match="JSON"):
        models.create("cifar10_resnet20", num_classes=object())
    with pytest.raises(HT2Error, match="cannot build cifar10_resnet20 with options"):
        models.create("cifar10_resnet20", widht=3)


def test_bundled_pretrained_missing_and_present(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bundled, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(HT2Error) as info:
        models.create("cifar10_resnet56", weights="pretrained")
    expected = "no pretrained weights are bundled for 'cifar10_resnet56'; pass weights=FILE"
    assert str(info.value) == expected
    with pytest.raises(HT2Error, match="no pretrained weights are bundled for 'imagenet_alexnet'"):
        models.create("imagenet_alexnet", weights="pretrained")
    source = models.create("cifar10_resnet20")
    save_file(source.state_dict(), str(tmp_path / "cifar10_resnet20.safetensors"))
    loaded = models.create("cifar10_resnet20", weights="pretrained")
    _assert_same_state(loaded, source.state_dict())


# ---- weight files ---------------------------------------------------------------------------


class _NotAStateDict:
    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def test_missing_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(HT2Error, match=f"weights file {path} does not exist"):
        models.create("cifar10_resnet20", weights=path)


def test_pickle_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save(_NotAStateDict(), path)
    with pytest.raises(HT2Error) as info:
        models.read_state_dict(path)
    message = str(info.value)
    assert message.startswith(f"weights file {path} is a pickle that weights_only loading refuses")
    assert "re-save it as a plain state dict or .safetensors" in message
    assert "\n" not in message


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "best": 0.9, "state_dict": {"lr": 0.1}}, path)
    with pytest.raises(HT2Error, match=f"weights file {path} holds no state dict"):
        models.read_state_dict(path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    state = models.create("cifar10_resnet20").state_dict()
    whole = tmp_path / f"whole{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(whole))
    else:
        torch.save(state, whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(HT2Error, match=f"weights file {cut} is corrupt or truncated"):
        models.read_state_dict(cut)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(HT2Error, match="unknown suffix '.npz'; use one of .pth, .pt"):
        models.read_state_dict(path)


def test_wrong_architecture_lists_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = dict(models.create("cifar10_resnet20").state_dict())
    for key in ("conv1.weight", "bn1.weight"):
        del state[key]
    state["foo.weight"] = torch.zeros(3)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(HT2Error) as info:
        models.create("cifar10_resnet20", weights=path)
    message = str(info.value)
    assert message.startswith(f"weights file {path} does not fit cifar10_resnet20: ")
    assert "missing keys conv1.weight, bn1.weight;" in message
    assert "unexpected keys foo.weight" in message


def test_wrong_depth_and_shape_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "r20.th"
    torch.save({"state_dict": models.create("cifar10_resnet20", num_classes=5).state_dict()}, path)
    with pytest.raises(HT2Error) as info:
        models.create("cifar10_resnet20", weights=path)
    assert "shape mismatch linear.weight expects (10, 64) but the file has (5, 64)" in str(
        info.value
    )
    with pytest.raises(HT2Error) as info:
        models.create("cifar10_resnet56", weights=path)
    message = str(info.value)
    assert "missing keys layer1.3.conv1.weight" in message and "in all)" in message
    assert "unexpected keys" not in message


def test_state_dict_nesting_and_module_prefix(tmp_path: Path) -> None:
    source = models.create("cifar10_resnet20")
    path = tmp_path / "ddp.bin"
    wrapped = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"model": wrapped, "epoch": 9}, path)
    _assert_same_state(models.create("cifar10_resnet20", weights=path), source.state_dict())


def test_safetensors_round_trip(tmp_path: Path) -> None:
    source = models.create("cifar10_densenet40")
    path = tmp_path / "densenet.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = models.create("cifar10_densenet40", weights=path)
    _assert_same_state(loaded, source.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), source.eval()(x))


# ---- torchvision and timm ---------------------------------------------------------------------


def _no_download(*args, **kwargs) -> None:
    raise URLError("no network in tests")


def test_pretrained_offline_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    with pytest.raises(HT2Error) as info:
        models.create("resnet18", weights="pretrained")
    assert str(info.value) == (
        "could not download torchvision's pretrained weights for 'resnet18' (offline?): "
        "pass weights=FILE or weights=None"
    )
    assert info.value.params == ("weights=FILE", "weights=None")


def _put_in_hub_cache(
    tmp_path: Path, name: str, state: dict[str, torch.Tensor], monkeypatch
) -> None:
    """Cache `state` named by its own sha256 prefix, as torch.hub names files, and publish it."""
    import hashlib

    import torchvision.models

    weights = torchvision.models.get_model_weights(name).DEFAULT
    cache = tmp_path / "checkpoints"
    cache.mkdir(exist_ok=True)
    staged = cache / "staged.pth"
    torch.save(state, staged)
    filename = f"{name}-{hashlib.sha256(staged.read_bytes()).hexdigest()[:8]}.pth"
    staged.rename(cache / filename)
    monkeypatch.setattr(weights.value, "url", f"https://download.pytorch.org/models/{filename}")


def test_pretrained_from_hub_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    import torchvision.models

    state = torchvision.models.resnet18().state_dict()
    _put_in_hub_cache(tmp_path, "resnet18", state, monkeypatch)
    model = models.create("imagenet_resnet18", weights="pretrained")
    _assert_same_state(model, state)
    assert model.ht2_arch == {"name": "resnet18", "kwargs": {}, "weights": "pretrained"}


def test_googlenet_defaults_and_pretrained_rebuild(tmp_path: Path, monkeypatch) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = models.create("googlenet")
    assert plain.aux1 is None and plain.aux2 is None and not plain.transform_input
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    import torchvision.models

    published = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    _put_in_hub_cache(tmp_path, "googlenet", published.state_dict(), monkeypatch)
    model = models.create("imagenet_googlenet", weights="pretrained")
    assert model.aux1 is None and model.transform_input
    assert model.ht2_arch == {
        "name": "googlenet",
        "kwargs": {"transform_input": True},
        "weights": "pretrained",
    }
    rebuilt = models.create(model.ht2_arch["name"], **model.ht2_arch["kwargs"])
    assert rebuilt.transform_input
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_timm_missing_message(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    with pytest.raises(HT2Error) as info:
        models.create("timm/resnet18")
    assert str(info.value) == "timm models need timm: pip install 'ht2[timm]'"
