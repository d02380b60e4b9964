"""Weights never run code: every cache and file is read without unpickling code, hash-checked.

Each test plants a file in the exact place a loader reads (torch hub's checkpoints folder,
Hugging Face's cache, a --weights path); pickles carry a payload that would create a marker
file if unpickled unsafely. All offline: downloads fail the test.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ht2 import HT2Error, models
from ht2.cli.main import main
from ht2.models import published
from ht2.models.published import hub_state_dict
from ht2.models.weights import read_state_dict

TORCHVISION_FILE = "resnet18-f37072fd.pth"  # torchvision's published name for resnet18
TIMM_URL_MODEL, TIMM_URL_FILE = "legacy_seresnet18", "seresnet18-4bb0ce65.pth"
TIMM_HF_MODEL, TIMM_HF_REPO = "resnet18", "models--timm--resnet18.a1_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Payload:
    """Unpickled unsafely, this opens (creates) `marker`: the harmless stand-in for any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _plant_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _no_download(*args, **kwargs) -> None:
    raise AssertionError("a test tried to download")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch hub's checkpoints folder under a private TORCH_HOME; downloading fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # set_dir() would override TORCH_HOME
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    return Path(torch.hub.get_dir()) / "checkpoints"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, offline Hugging Face cache (its settings are read at import, so patched)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def _hf_snapshot(cache: Path, filename: str) -> tuple[Path, Path]:
    """(snapshot path of `filename`, blobs folder) in the cache layout huggingface_hub reads."""
    repo = cache / TIMM_HF_REPO
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    return snapshot / filename, repo / "blobs"


def _link_as_blob(content: Path, pointer: Path, blobs: Path, name: str | None = None) -> Path:
    """Move `content` into blobs/ under `name` (default: its sha256) and link `pointer` to it."""
    blob = blobs / (name or _sha256(content))
    content.rename(blob)
    pointer.symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return blob


def _refused(name: str) -> str:
    with pytest.raises(HT2Error) as info:
        models.create(name, weights="pretrained")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_planted_payload_runs_when_unpickled_unsafely(tmp_path: Path, marker: Path) -> None:
    """The control: the planted files really do run code under torch.load's unsafe default."""
    path = _plant_pickle(tmp_path / "evil.pth", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


# ---- torch hub: torchvision and timm's URL weights ----------------------------------------------


def test_torchvision_cached_pickle_is_refused_without_running(hub: Path, marker: Path) -> None:
    planted = _plant_pickle(hub / TORCHVISION_FILE, marker)
    message = _refused("resnet18")
    assert str(planted) in message and "delete" in message
    assert not marker.exists()


def test_torchvision_valid_weights_failing_the_hash_are_refused(hub: Path) -> None:
    import torchvision

    hub.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), hub / TORCHVISION_FILE)
    message = _refused("resnet18")
    assert message == (
        f"cached weights {hub / TORCHVISION_FILE} do not match the sha256 prefix f37072fd in "
        "their name (corrupt or replaced); delete the file to download it again"
    )


def test_timm_url_cached_pickle_is_refused_without_running(hub: Path, marker: Path) -> None:
    planted = _plant_pickle(hub / TIMM_URL_FILE, marker)
    message = _refused(f"timm/{TIMM_URL_MODEL}")
    assert str(planted) in message and "do not match the sha256 prefix 4bb0ce65" in message
    assert not marker.exists()


def test_hub_pickle_matching_its_hash_is_still_not_unpickled(hub: Path, marker: Path) -> None:
    staged = _plant_pickle(hub / "staged.pth", marker)
    planted = hub / f"evil-{_sha256(staged)[:8]}.pth"
    staged.rename(planted)
    with pytest.raises(HT2Error) as info:
        hub_state_dict(f"https://example.invalid/x/{planted.name}", "test weights")
    assert str(info.value) == (
        f"weights file {planted} is a pickle that weights_only loading refuses (it may run "
        "code); delete it to download it again"
    )
    assert not marker.exists()


def test_hub_file_matching_its_hash_is_read(hub: Path) -> None:
    state = {"w": torch.arange(6.0).view(2, 3)}
    hub.mkdir(parents=True)
    staged = hub / "staged.pth"
    torch.save(state, staged)
    name = f"good-{_sha256(staged)[:10]}.pth"
    staged.rename(hub / name)
    read = hub_state_dict(f"https://example.invalid/x/{name}", "test weights")
    assert read.keys() == state.keys() and torch.equal(read["w"], state["w"])


def test_download_failing_its_hash_never_lands_in_the_cache(hub: Path, monkeypatch) -> None:
    def fake_download(url: str, dst: str, *args, **kwargs) -> None:
        torch.save({"w": torch.ones(2)}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    monkeypatch.setattr(published, "resolves", lambda url: True)  # example.invalid never does
    with pytest.raises(HT2Error, match="does not match the sha256 prefix in its name"):
        hub_state_dict("https://example.invalid/x/weights-0123abcd.pth", "test weights")
    assert list(hub.iterdir()) == []


# ---- Hugging Face cache: timm's default source ------------------------------------------------


def test_timm_hf_pickle_linked_by_its_hash_is_refused_without_running(
    hf_cache: Path, marker: Path, tmp_path: Path
) -> None:
    pointer, blobs = _hf_snapshot(hf_cache, "pytorch_model.bin")
    _link_as_blob(_plant_pickle(tmp_path / "evil.bin", marker), pointer, blobs)
    message = _refused(f"timm/{TIMM_HF_MODEL}")
    assert message.startswith(f"weights file {pointer} is a pickle that weights_only")
    assert not marker.exists()


def test_timm_hf_file_that_is_not_a_hashed_blob_is_refused(hf_cache: Path, marker: Path) -> None:
    pointer, _ = _hf_snapshot(hf_cache, "pytorch_model.bin")
    _plant_pickle(pointer, marker)
    message = _refused(f"timm/{TIMM_HF_MODEL}")
    assert message.startswith(f"cached weights {pointer} cannot be checked")
    assert not marker.exists()


def test_timm_hf_valid_weights_failing_their_blob_hash_are_refused(
    hf_cache: Path, tmp_path: Path
) -> None:
    pointer, blobs = _hf_snapshot(hf_cache, "model.safetensors")
    weights = tmp_path / "model.safetensors"
    save_file(models.create(f"timm/{TIMM_HF_MODEL}").state_dict(), weights)
    blob = _link_as_blob(weights, pointer, blobs, name="f" * 64)
    message = _refused(f"timm/{TIMM_HF_MODEL}")
    assert message == (
        f"cached weights {pointer} do not match the sha256 {'f' * 64} published for them "
        f"(corrupt or replaced); delete {blob} and {pointer} to download them again"
    )


def test_timm_hf_safetensors_matching_their_blob_load(hf_cache: Path, tmp_path: Path) -> None:
    source = models.create(f"timm/{TIMM_HF_MODEL}")
    pointer, blobs = _hf_snapshot(hf_cache, "model.safetensors")
    weights = tmp_path / "model.safetensors"
    save_file(source.state_dict(), weights)
    _link_as_blob(weights, pointer, blobs)
    loaded = models.create(f"timm/{TIMM_HF_MODEL}", weights="pretrained")
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert "state_dict" not in loaded.pretrained_cfg


def test_a_host_without_an_address_fails_at_once_without_a_download(hub: Path) -> None:
    """Offline (no DNS), nothing is tried: a download would retry for half a minute."""
    with pytest.raises(HT2Error, match=r"could not download test weights \(offline\?\)"):
        hub_state_dict("https://example.invalid/x/weights-0123abcd.pth", "test weights")
    assert not hub.exists() or list(hub.iterdir()) == []


def test_offline_hugging_face_reads_only_its_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    asked = []

    def fake_download(repo_id, filename, revision=None, local_files_only=False, **kwargs):
        asked.append(local_files_only)
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(published, "resolves", lambda url: False)
    with pytest.raises(HT2Error, match=r"could not download w \(offline\?\)"):
        published.hf_state_dict("timm/x", ["a.safetensors", "b.bin"], "w")
    assert asked == [True, True]


def test_timm_offline_without_cached_weights_says_what_to_do(hf_cache: Path) -> None:
    assert _refused(f"timm/{TIMM_HF_MODEL}") == (
        f"could not download timm's pretrained weights for 'timm/{TIMM_HF_MODEL}' (offline?): "
        "pass weights=FILE or weights=None"
    )


# ---- --weights FILE and the CLI ---------------------------------------------------------------


def test_weights_file_payload_is_refused_without_running(tmp_path: Path, marker: Path) -> None:
    path = _plant_pickle(tmp_path / "evil.pth", marker)
    with pytest.raises(HT2Error, match=f"weights file {path} is a pickle that weights_only"):
        models.create("cifar10_resnet20", weights=path)
    assert not marker.exists()


@pytest.mark.parametrize("source", ["--weights", "--pretrained"])
def test_cli_refuses_payloads_in_one_line(
    source: str, hub: Path, marker: Path, tmp_path: Path, capsys
) -> None:
    planted = _plant_pickle(hub / TORCHVISION_FILE, marker)
    weights = ["--weights", str(planted)] if source == "--weights" else ["--pretrained"]
    code = main(["compress", "resnet18", *weights, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ht2: error: ") and str(planted) in err
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---- plain pickles (pickle.dump, not torch.save) -----------------------------------------------


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch's, expected
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_is_refused_as_a_pickle_without_running(
    tmp_path: Path, marker: Path, protocol: int
) -> None:
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=protocol))
    with pytest.raises(HT2Error) as info:
        read_state_dict(path)
    assert str(info.value) == (
        f"weights file {path} is a pickle that weights_only loading refuses (it may run code); "
        "re-save it as a plain state dict or .safetensors"
    )
    assert not marker.exists()


def test_bytes_that_are_no_pickle_are_called_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes([0x95]) + bytes(range(64)))
    with pytest.raises(HT2Error, match=f"weights file {path} is corrupt or truncated"):
        read_state_dict(path)
