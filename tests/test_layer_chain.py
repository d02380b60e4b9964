"""benchmarks/layer_chain.py: the matmul chain computes what the HT-2 layer does, per stage."""

from __future__ import annotations

import argparse
from types import ModuleType

import pytest
import torch

import ht2
from ht2.metrics.treatment import Treatment
from tests._shared import load_benchmark, rel_error

EXAMPLE = torch.zeros(1, 3, 32, 32)


@pytest.fixture
def chain(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_benchmark("layer_chain", monkeypatch)


def _compressed() -> torch.nn.Module:
    torch.manual_seed(0)
    model = ht2.models.create("cifar10_resnet20").eval()
    ht2.compress(model, energy=0.6, example_input=EXAMPLE)
    return model


def test_one_layer_per_stage_and_the_matmul_chain_is_exact(chain: ModuleType) -> None:
    model = _compressed()
    picked = chain.stage_layers(model, EXAMPLE)
    sizes = [tuple(shape[1:]) for _, shape in picked]
    assert len(sizes) == len(set(sizes)) == 3 and (16, 32, 32) in sizes
    for name, shape in picked:
        layer = model.get_submodule(name)
        assert layer.method == "ht2"
        x = torch.randn(3, *shape[1:]).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            assert rel_error(chain.MatmulChain(layer)(x), layer(x)) < 1e-5


def test_measure_layer_times_three_variants_per_treatment(
    chain: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _compressed()
    name, shape = chain.stage_layers(model, EXAMPLE)[-1]
    eager = [Treatment("float32", False, "eager"), Treatment("bfloat16", True, "eager")]
    monkeypatch.setattr(chain, "treatments", lambda: eager)
    args = argparse.Namespace(batch_size=2, threads=1, repeats=1, warmup=0)
    result = chain.measure_layer(name, model.get_submodule(name), shape, args)
    assert result["name"] == name and result["input_size"] == list(shape[1:])
    macs = result["macs_per_sample"]
    assert macs["ht2"] == macs["matmul chain"] < macs["dense"]
    assert [t["treatment"] for t in result["timings"]] == [t.to_dict() for t in eager]
    assert all(set(t["ms"]) == {"dense", "ht2", "matmul chain"} for t in result["timings"])
