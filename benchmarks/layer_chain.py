"""Where an HT-2 layer's time goes: one layer per stage, its dense conv against its four factor
convs and against the same chain written as matmuls on NHWC (for torch.compile to fuse), timed
in turn in every treatment, with the MAC rate each reaches.

Run: python benchmarks/layer_chain.py [--model cifar10_resnet56] [--energy 0.7]
     [--batch-size 128] [--threads 1] [--repeats 15] [--warmup 3]
     [--out benchmarks/results/layer_chain.json]

The model (shared weights when ../shared has them, else random init) is compressed at
--energy; the first HT-2 layer of each stage (each input size) is taken. Each of the three
variants runs the same factors (the dense conv: their product), so the times differ only in
how the work is laid out. 'GMAC/s' is the variant's MACs over its median time: the rate a
runtime reaches on that shape. Writes one JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from paths import ROOT, command_line, portable
from paths import write_json as write_atomically  # benchmarks/ is on sys.path when run as a script
from shared_weights import WEIGHTS
from torch import nn

BENCHMARK = "layer_chain"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "layer_chain.json"
VARIANTS = ("dense", "ht2", "matmul chain")


class MatmulChain(nn.Module):
    """An HT-2 layer's four factors as matmuls on the NHWC view of a channels-last input:
    1x1 convs are matmuls over channels, the 3-tap convs sums of matmuls over shifted views.
    Stride 1, 'same' zero padding and no dilation only (what CIFAR ResNets' 3x3 convs use)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.reduce = nn.Parameter(layer.reduce.weight.detach()[:, :, 0, 0].T.contiguous())
        self.vertical = nn.Parameter(layer.vertical.weight.detach()[..., 0].permute(2, 1, 0))
        self.horizontal = nn.Parameter(layer.horizontal.weight.detach()[:, :, 0].permute(2, 1, 0))
        self.expand = nn.Parameter(layer.expand.weight.detach()[:, :, 0, 0].T.contiguous())
        bias = layer.expand.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.permute(0, 2, 3, 1) @ self.reduce  # N H W R1
        taps = self.vertical.shape[0]
        pad = taps // 2
        z = F.pad(z, (0, 0, 0, 0, pad, pad))
        height = z.shape[1] - 2 * pad
        z = sum(z[:, i : i + height] @ self.vertical[i] for i in range(taps))
        z = F.pad(z, (0, 0, pad, pad))
        width = z.shape[2] - 2 * pad
        z = sum(z[:, :, i : i + width] @ self.horizontal[i] for i in range(taps))
        z = z @ self.expand
        if self.bias is not None:
            z = z + self.bias
        return z.permute(0, 3, 1, 2)


def stage_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, torch.Size]]:
    """The first HT-2 layer of each input size that keeps its size (stride 1, 'same' padding),
    with that input's shape (batch 1)."""
    from ht2.metrics.latency import layer_input_shapes

    shapes = layer_input_shapes(model, example)
    chosen: dict[tuple[int, ...], str] = {}
    for name, module in model.named_modules():
        if getattr(module, "method", None) == "ht2" and name in shapes and _same_size(module):
            chosen.setdefault(tuple(shapes[name][1:]), name)
    return [(name, shapes[name]) for name in chosen.values()]


def _same_size(layer: nn.Module) -> bool:
    """Whether the layer is one MatmulChain can write: stride 1, no dilation, 'same' padding."""
    spec = layer.spec
    same = tuple(k // 2 for k in spec.kernel_size)
    plain = spec.stride == (1, 1) and spec.dilation == (1, 1) and spec.padding_mode == "zeros"
    plain = plain and not spec.pad_same
    return plain and tuple(spec.padding) == same and getattr(layer, "form", "four") == "four"


def treatments() -> list[Any]:
    """Eager in both dtypes and layouts, compile in channels_last, OpenVINO where installed."""
    from ht2.metrics.like_for_like import missing_runtime
    from ht2.metrics.treatment import Treatment

    chosen = [Treatment(d, nhwc, "eager") for d in ("float32", "bfloat16") for nhwc in (0, 1)]
    chosen += [Treatment(d, True, "compile") for d in ("float32", "bfloat16")]
    if missing_runtime("openvino") is None:
        chosen += [Treatment(d, False, "openvino") for d in ("float32", "bfloat16")]
    return chosen


def measure_layer(
    name: str, layer: nn.Module, shape: torch.Size, args: argparse.Namespace
) -> dict[str, Any]:
    from ht2.metrics import layer_macs
    from ht2.metrics.treatment import time_in_turn

    spec = layer.spec
    dense = layer.to_dense()
    chain = MatmulChain(layer)
    x = torch.randn(args.batch_size, *shape[1:])
    with torch.no_grad():
        reference = layer(x)
        for other in (dense, chain):
            error = (other(x) - reference).abs().max() / reference.abs().max()
            if float(error) > 1e-4:
                raise SystemExit(f"layer_chain: {name}: a variant differs by {float(error):.2g}")
    one = torch.zeros(1, *shape[1:])
    macs = {
        "dense": sum(layer_macs(dense, one).values()),
        "ht2": sum(layer_macs(layer, one).values()),
    }
    macs["matmul chain"] = macs["ht2"]
    timings = []
    with tempfile.TemporaryDirectory(prefix="ht2-layer-chain-") as workdir:
        for treatment in treatments():
            ms = time_in_turn(
                [dense, layer, chain],
                x,
                treatment,
                [f"{name} {variant}" for variant in VARIANTS],
                threads=args.threads,
                repeats=args.repeats,
                warmup=args.warmup,
                input_size=tuple(shape[1:]),
                workdir=Path(workdir),
            )
            by_variant = dict(zip(VARIANTS, ms, strict=True))
            timings.append({"treatment": treatment.to_dict(), "ms": by_variant})
            cells = ", ".join(f"{v} {t:.2f} ms" for v, t in zip(VARIANTS, ms, strict=True))
            print(f"{name} {treatment.describe()}: {cells}", flush=True)
    return {
        "name": name,
        "ranks": dict(layer.ranks),
        "in_channels": spec.in_channels,
        "out_channels": spec.out_channels,
        "input_size": list(shape[1:]),
        "macs_per_sample": macs,
        "timings": timings,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cifar10_resnet56", help="(default: cifar10_resnet56)")
    parser.add_argument("--energy", type=float, default=0.7, help="(default: 0.7)")
    parser.add_argument("--batch-size", type=int, default=128, help="(default: 128)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs (default: 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ht2

    torch.set_num_threads(args.threads)
    file = args.shared / "weights" / WEIGHTS.get(args.model, "")
    has_weights = args.model in WEIGHTS and file.is_file()
    model = ht2.models.create(args.model, weights=file if has_weights else None).eval()
    input_size = ht2.models.get_entry(args.model).input_size
    example = torch.zeros(1, *input_size)
    ht2.compress(model, energy=args.energy, example_input=example)
    load = [round(os.getloadavg()[0], 2)]
    layers = [
        measure_layer(name, model.get_submodule(name), shape, args)
        for name, shape in stage_layers(model, example)
    ]
    load.append(round(os.getloadavg()[0], 2))
    given = argv if argv is not None else sys.argv[1:]
    write_atomically(
        args.out,
        {
            "benchmark": BENCHMARK,
            "command": command_line("python benchmarks/layer_chain.py", given),
            "model": args.model,
            "weights": portable(file.resolve()) if has_weights else "random init",
            "energy": args.energy,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
            "load": load,
            "layers": layers,
        },
    )
    print(f"wrote {portable(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
