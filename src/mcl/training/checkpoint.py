"""Resume checkpoints of a stage: safetensors for tensors, JSON for the rest; nothing is pickled.

One file, ``stage-k/checkpoint.safetensors``, holds the model's and the optimiser's tensors, every
rank's torch (and CUDA) RNG state, numpy's and Python's RNG state, and as JSON metadata the epoch and
step reached, the optimiser's scalars and parameter groups, the grad scaler and the metrics so far.
Written after every epoch (atomically, :func:`mcl.files.save_tensors`), so a crash can never pair one
epoch's weights with another's optimiser state; removed once the stage's final weights are recorded.

Example:
    >>> save_checkpoint(stage_dir, model, optimizer, TrainState(epoch=1, step=40), scaler)
    >>> state = load_checkpoint(stage_dir, model, optimizer, scaler)   # None when there is none
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mcl import distributed
from mcl.errors import RunDirError, one_line
from mcl.files import load_tensors_with_metadata, save_tensors
from mcl.run import CHECKPOINT_FILE as CHECKPOINT

logger = logging.getLogger("mcl")
# Files that other tools load with pickle; never read here, only warned about.
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


@dataclass
class TrainState:
    """Where a stage's training stands: epochs and steps done, and the metrics of those epochs."""

    epoch: int = 0
    step: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{param_id}.{key}"] = value
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                       meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = value
    for name, value in meta["scalars"].items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rank_rng_states() -> list[dict[str, torch.Tensor]]:
    """torch (also kornia's) and current-CUDA-device RNG state of every rank, gathered on all ranks.

    A collective under ``torch.distributed``: call it on every rank. Ranks draw different
    augmentations, so each rank's stream is saved and restored, not only rank 0's.
    """
    own = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        own["cuda"] = torch.cuda.get_rng_state()
    if not distributed.is_distributed():
        return [own]
    states: list[Any] = [None] * distributed.world_size()
    torch.distributed.all_gather_object(states, own)
    return states


def _rng_state(ranks: list[dict[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every global RNG a stage may draw from: torch and CUDA per rank, numpy and Python of rank 0."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    tensors = {"rng.numpy": torch.from_numpy(keys.astype(np.int64))}
    for rank, states in enumerate(ranks):
        tensors.update({f"rng.rank{rank}.{kind}": value for kind, value in states.items()})
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [int(position), int(has_gauss), float(gauss)], "python": [version, list(internal), gauss_next]}
    return tensors, meta


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any], step: int) -> None:
    rank = distributed.rank()
    if f"rng.rank{rank}.torch" in tensors:
        torch.set_rng_state(tensors[f"rng.rank{rank}.torch"])
    else:  # more ranks than when the checkpoint was written: a fresh, distinct stream per rank
        logger.warning("checkpoint has no RNG state for rank %d; reseeding it", rank)
        torch.manual_seed(distributed.rank_seed(step))
    if f"rng.rank{rank}.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors[f"rng.rank{rank}.cuda"])
    position, has_gauss, gauss = meta["numpy"]
    np.random.set_state(("MT19937", tensors["rng.numpy"].numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(stage_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState,
                    scaler: torch.amp.GradScaler | None, extra: nn.Module | None = None,
                    rng: list[dict[str, torch.Tensor]] | None = None) -> None:
    """Write the end-of-epoch checkpoint: weights, optimiser, scaler, RNG states and metrics so far.

    One safetensors file holds tensors and metadata, so a crash can never pair one epoch's weights
    with another's optimiser state. The sampler needs no state: its shuffle is a function of
    ``(seed, epoch)``, and the learning rate one of the step. ``extra`` is training state that lives
    outside the model (e.g. a MoCo queue and momentum encoder); its ``state_dict`` is saved too.
    ``rng``: every rank's RNG states from :func:`rank_rng_states` (default: this process's).
    """
    optimizer_tensors, optimizer_meta = _optimizer_tensors(optimizer)
    rng_tensors, rng_meta = _rng_state(rng or rank_rng_states())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(optimizer_tensors)
    tensors.update(rng_tensors)
    if extra is not None:
        tensors.update({f"extra.{k}": v for k, v in extra.state_dict().items()})
    meta = {"epoch": state.epoch, "step": state.step, "optimizer": optimizer_meta, "rng": rng_meta,
            "metrics": state.metrics,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None}
    save_tensors(stage_dir / CHECKPOINT, tensors, metadata={"checkpoint": json.dumps(meta)})


def load_checkpoint(stage_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, extra: nn.Module | None = None) -> TrainState | None:
    """Restore the last epoch checkpoint into the objects given; None if there is none.

    Only ``checkpoint.safetensors`` is ever read: a pickle-based file (``checkpoint.pt`` ...) next to
    it is ignored with a warning, never loaded. A damaged checkpoint raises :class:`RunDirError`.
    """
    _warn_about_foreign_checkpoints(stage_dir)
    path = stage_dir / CHECKPOINT
    if not path.exists():
        return None
    tensors, metadata = load_tensors_with_metadata(path)
    try:
        meta = json.loads(metadata["checkpoint"])
        device = next(model.parameters()).device
        model.load_state_dict(_with_prefix(tensors, "model."))
        optimizer_tensors = {k: v.to(device) for k, v in tensors.items() if k.startswith("optimizer.")}
        _restore_optimizer(optimizer, optimizer_tensors, meta["optimizer"])
        _restore_rng(tensors, meta["rng"], int(meta["step"]))
        if extra is not None:
            extra.load_state_dict(_with_prefix(tensors, "extra."))
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        return TrainState(int(meta["epoch"]), int(meta["step"]), list(meta["metrics"]))
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        reason = one_line(exc)[:200]
        raise RunDirError(f"{path}: not a checkpoint of this run ({type(exc).__name__}: {reason}); delete it "
                          "to retrain this stage from its first epoch") from None


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix``, with the prefix removed (a sub-module's state dict)."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _warn_about_foreign_checkpoints(stage_dir: Path) -> None:
    for path in sorted(stage_dir.glob("*")):
        if path.suffix in PICKLE_SUFFIXES:
            logger.warning("%s: ignored; mcl reads checkpoints only from %s and never unpickles files",
                           path, CHECKPOINT)


def remove_checkpoint(stage_dir: Path) -> None:
    """Drop the resume checkpoint once the stage's final weights are recorded."""
    (stage_dir / CHECKPOINT).unlink(missing_ok=True)
