"""Every knob of a training run in one dataclass, and the recipes of the paper as presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class TrainConfig:
    """A training or fine-tuning run. Batch size is global (split across torchrun processes)."""

    epochs: int = 1
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-4
    batch_size: int = 128
    schedule: str = "onecycle"
    milestones: list[int] = field(default_factory=list)
    step_size: int = 30
    gamma: float = 0.1
    label_smoothing: float = 0.0
    max_steps: int | None = None
    amp: str = "auto"  # bf16 on a CPU with native bfloat16, else none (ht2.train.precision)
    channels_last: bool | None = None  # None: on CPU, not on CUDA
    in_memory: bool | None = None  # None: when the decoded training split fits (ht2.train.inputs)
    clip_grad: float | None = None
    seed: int = 0
    workers: int = 2
    lighting: float = 0.0
    distill: bool = False
    distill_temperature: float = 4.0
    distill_weight: float = 0.5
    distill_blocks: float = 0.0  # weight of the block-output term (0: off; ht2.train.features)
    ema: float = 0.0  # decay of the weight average kept and evaluated (0: off; ht2.train.averaging)
    train_limit: int | None = None
    eval_limit: int | None = None
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, **changes: Any) -> TrainConfig:
        """A copy with the given fields changed (None values are ignored)."""
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(sorted(unknown))}")
        values = {**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}}
        return TrainConfig(**values)


RECIPES: dict[str, dict[str, Any]] = {
    # DenseNet-40 from scratch on CIFAR-10 (the paper's reference recipe).
    "densenet40-cifar10": {
        "epochs": 300,
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
        "batch_size": 64,
        "schedule": "multistep",
        "milestones": [150, 225],
        "gamma": 0.1,
    },
    # AlexNet-BN on ImageNet, with AlexNet-style PCA lighting noise.
    "alexnet-imagenet": {
        "epochs": 100,
        "lr": 0.05,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 5e-4,
        "batch_size": 128,
        "schedule": "step",
        "step_size": 20,
        "gamma": 0.1,
        "lighting": 0.1,
    },
    # Fine-tuning a compressed model on CIFAR-10: one-cycle.
    "finetune-cifar10": {
        "epochs": 300,
        "lr": 0.01,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 3e-4,
        "batch_size": 64,
        "schedule": "onecycle",
    },
    # Fine-tuning a compressed model on ImageNet: one-cycle, bfloat16 autocast.
    "finetune-imagenet": {
        "epochs": 20,
        "lr": 0.01,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,
        "batch_size": 128,
        "schedule": "onecycle",
        "amp": "bf16",
    },
    # Our CIFAR-10 ResNet baseline on CPU: short one-cycle run.
    "resnet-cifar10": {
        "epochs": 30,
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "batch_size": 128,
        "schedule": "onecycle",
    },
}


def recipe_config(name: str | None) -> TrainConfig:
    """The defaults, overlaid with recipe `name` when given."""
    if name is None:
        return TrainConfig()
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return TrainConfig(**RECIPES[name])
