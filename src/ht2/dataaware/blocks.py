"""Block-level refit: the factors inside one block (a residual block, say) fitted jointly so
that the block's output matches the original block's, on the compressed network's inputs.

A layer-by-layer refit cannot see the nonlinearity and the shortcut between two layers; a
block fit can. It is a label-free reconstruction on the calibration images (L-BFGS on the
block's output error), kept only where it lowers that error on held-out images.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from ht2.dataaware.capture import layer_input_output
from ht2.layers import FactorizedLayer


def block_of(model: nn.Module, layers: Iterable[str]) -> dict[str, str]:
    """{layer: its block} for the layers inside one: the layer's outermost ancestor that is an
    element of an nn.Sequential (a residual block in a ResNet stage), when that ancestor is
    more than the layer itself. Layers in no block are left out; the order is `layers`'."""
    containers = {
        name for name, module in model.named_modules() if isinstance(module, nn.Sequential)
    }
    blocks: dict[str, str] = {}
    for layer in layers:
        parts = layer.split(".")
        for depth in range(1, len(parts)):
            if ".".join(parts[: depth - 1]) in containers:
                blocks[layer] = ".".join(parts[:depth])
                break
    return blocks


def _single_input(block: nn.Module, model: nn.Module, images: torch.Tensor) -> bool:
    """Whether `block` is called with exactly one tensor and no keyword arguments."""
    seen: list[bool] = []

    def hook(module, args, kwargs):
        seen.append(len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor))

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return bool(seen) and all(seen)


def block_pairs(
    original: nn.Module, work: nn.Module, name: str, images: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's inputs in `work` and the original block's outputs, on `images`."""
    inputs, targets = [], []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            inputs.append(layer_input_output(work, name, chunk, want_output=False))
            targets.append(layer_input_output(original, name, chunk, want_output=True))
    return torch.cat(inputs), torch.cat(targets)


def block_error(
    block: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> float:
    """Relative squared error of the block's outputs: sum |f(x) - y|^2 / sum |y|^2."""
    with torch.no_grad():
        error = sum(
            float((block(x) - y).double().square().sum())
            for x, y in zip(inputs.split(batch_size), targets.split(batch_size), strict=True)
        )
    return error / max(float(targets.double().square().sum()), 1e-300)


def fit_block(
    block: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    iterations: int,
    batch_size: int,
) -> None:
    """L-BFGS on the relative output error of `block` over all `inputs`, moving only the
    parameters of the factorized layers inside it; in place, in eval mode."""
    params = [
        p
        for module in block.modules()
        if isinstance(module, FactorizedLayer)
        for p in module.parameters()
    ]
    if not params:
        return
    moving = {id(p) for p in params}
    frozen = [p for p in block.parameters() if id(p) not in moving]
    was_grad = [p.requires_grad for p in block.parameters()]
    for p in frozen:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    scale = max(float(targets.double().square().sum()), 1e-30)
    optimizer = torch.optim.LBFGS(
        params, lr=1.0, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = torch.zeros((), device=inputs.device)
        for x, y in zip(inputs.split(batch_size), targets.split(batch_size), strict=True):
            loss = (block(x) - y).square().sum() / scale
            loss.backward()
            total += loss.detach()
        return total

    try:
        optimizer.step(closure)
    finally:
        for p, flag in zip(block.parameters(), was_grad, strict=True):
            p.requires_grad_(flag)
            p.grad = None


def refit_block(
    original: nn.Module,
    work: nn.Module,
    name: str,
    fit_images: torch.Tensor,
    held_out: torch.Tensor,
    iterations: int,
    batch_size: int,
) -> dict | None:
    """Fit block `name` of `work` to the same block of `original`; keep the result only if
    its output error on the held-out images (the fit images when there are none) went down.
    Returns the errors before and after and the decision, or None for a block this cannot
    fit (called with more than one tensor)."""
    block = work.get_submodule(name)
    if not _single_input(block, work, fit_images[:1]):
        return None
    inputs, targets = block_pairs(original, work, name, fit_images, batch_size)
    check = held_out if len(held_out) else fit_images
    check_in, check_out = block_pairs(original, work, name, check, batch_size)
    before = block_error(block, check_in, check_out, batch_size)
    saved = copy.deepcopy(block.state_dict())
    fit_block(block, inputs, targets, iterations, batch_size)
    after = block_error(block, check_in, check_out, batch_size)
    kept = after < before
    if not kept:
        block.load_state_dict(saved)
    return {"before": before, "after": after, "kept": kept}
