"""Training engine: train loop, evaluation, checkpoints, distributed, logging."""

from adaptkd.engine.api import train
from adaptkd.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from adaptkd.engine.evaluate import evaluate, evaluate_model, load_run_model
from adaptkd.engine.trainer import NonFiniteError, RunFolderError, Trainer

__all__ = [
    "CheckpointError",
    "NonFiniteError",
    "RunFolderError",
    "Trainer",
    "atomic_save",
    "evaluate",
    "evaluate_model",
    "load_checkpoint",
    "load_run_model",
    "train",
]
