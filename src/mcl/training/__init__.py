"""One stage's training: the loop (:mod:`.loop`), resume checkpoints (:mod:`.checkpoint`), schedule (:mod:`.schedule`).

The names other modules use are re-exported here (``from mcl.training import train, Fit``).
"""

from __future__ import annotations

from mcl.training.checkpoint import (
    CHECKPOINT,
    TrainState,
    load_checkpoint,
    rank_rng_states,
    remove_checkpoint,
    save_checkpoint,
)
from mcl.training.loop import METRICS, Fit, LossFn, resolve_device, train
from mcl.training.schedule import build_optimizer, learning_rate

__all__ = ["CHECKPOINT", "METRICS", "Fit", "LossFn", "TrainState", "build_optimizer", "learning_rate",
           "load_checkpoint", "rank_rng_states", "remove_checkpoint", "resolve_device", "save_checkpoint", "train"]
