"""Training: runs, checkpoints, metrics, plots."""

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .runner import evaluate, load_data, lr_at, train

__all__ = ["load_checkpoint", "model_from_checkpoint", "save_checkpoint", "evaluate",
           "load_data", "lr_at", "train"]
