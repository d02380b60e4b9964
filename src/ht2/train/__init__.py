"""Training and fine-tuning: one loop, schedules, checkpoints, torchrun, BN calibration."""

from ht2.train.calibrate import recalibrate_batchnorm
from ht2.train.config import RECIPES, TrainConfig, recipe_config
from ht2.train.loop import evaluate, train_one_epoch
from ht2.train.runner import RunResult, fit

__all__ = [
    "RECIPES",
    "RunResult",
    "TrainConfig",
    "evaluate",
    "fit",
    "recalibrate_batchnorm",
    "recipe_config",
    "train_one_epoch",
]
