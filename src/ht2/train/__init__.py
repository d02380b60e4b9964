"""Training and fine-tuning: one loop, schedules, checkpoints, torchrun, BN calibration."""

from ht2._lazy import lazy_exports

_EXPORTS = {
    "recalibrate_batchnorm": "ht2.train.calibrate",
    "Calibration": "ht2.train.calibration",
    "calibrate_folder": "ht2.train.calibration",
    "calibrate_on_train_images": "ht2.train.calibration",
    "RECIPES": "ht2.train.config",
    "TrainConfig": "ht2.train.config",
    "recipe_config": "ht2.train.config",
    "evaluate": "ht2.train.loop",
    "train_one_epoch": "ht2.train.loop",
    "RunResult": "ht2.train.runner",
    "fit": "ht2.train.runner",
    "choose_teacher": "ht2.train.teacher",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "RECIPES",
    "Calibration",
    "RunResult",
    "TrainConfig",
    "calibrate_folder",
    "calibrate_on_train_images",
    "choose_teacher",
    "evaluate",
    "fit",
    "recalibrate_batchnorm",
    "recipe_config",
    "train_one_epoch",
]
