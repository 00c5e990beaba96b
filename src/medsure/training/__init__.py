"""Training: one seeded, resumable trainer for classification and segmentation.

>>> from medsure.training import TrainConfig, train, load_run
>>> result = train(TrainConfig(model="small_cnn", epochs=5), {"train": tr, "val": va}, "runs/a")
>>> run = load_run("runs/a"); run.model  # best weights, eval mode; run.config is config.json
>>> predict(run, test_split)             # medsure.predict: the run record travels with the model
"""

from medsure.training.checkpoint import load_checkpoint, save_checkpoint
from medsure.training.config import TrainConfig
from medsure.training.loop import validate_epoch
from medsure.training.run import LoadedRun, load_run
from medsure.training.splits import standard_splits
from medsure.training.trainer import TrainResult, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "validate_epoch",
    "LoadedRun",
    "load_run",
    "load_checkpoint",
    "save_checkpoint",
    "standard_splits",
]
