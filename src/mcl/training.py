"""One stage's optimisation loop: epochs, schedule, mixed precision, checkpoints, metrics.

Nothing here is specific to MCL: the stage loop (:mod:`mcl.stages`) hands in the task's loss (how a
batch becomes a loss) and the loader (:mod:`mcl.data.loader`, whose batch sampler is where MCL's
feature-aware negatives live). :func:`train` is the default ``fit`` of
:func:`mcl.stages.run_stages`; any function with its signature (:class:`Fit`) can replace it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from mcl import distributed, faults
from mcl.config import TrainConfig
from mcl.data.loader import Batch, Loader
from mcl.errors import RunDirError, TrainingError, one_line
from mcl.files import load_tensors_with_metadata, save_tensors, write_jsonl
from mcl.logging_utils import emit_metrics, progress_bar
from mcl.run import CHECKPOINT_FILE as CHECKPOINT
from mcl.run import METRICS_FILE as METRICS

logger = logging.getLogger("mcl")
# Files that other tools load with pickle; never read here, only warned about.
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


class LossFn(Protocol):
    """``(model, batch, pseudo_labels) -> scalar loss`` for one batch (``pseudo_labels`` of its samples, or None)."""

    def __call__(self, model: nn.Module, batch: Batch, pseudo_labels: torch.Tensor | None) -> torch.Tensor: ...


class Fit(Protocol):
    """Trains one stage's ``model`` (the signature of :func:`train`; pass your own to ``run_stages(fit=...)``).

    It must leave the trained weights in ``model``; everything else (checkpoints, metrics) is its own.
    """

    def __call__(self, model: nn.Module, loss_fn: LossFn, loader: Loader, config: TrainConfig, stage_dir: Path,
                 pseudo_labels: torch.Tensor | None = None, stage_name: str = "stage", progress: bool = True,
                 extra_state: nn.Module | None = None) -> None: ...


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this rank's CUDA device when there is one, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return torch.device(name)


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float, schedule: str = "cosine") -> float:
    """Linear warm-up, then cosine decay to zero (``cosine``) or the base rate (``constant``: the paper's CLIP runs)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum (no weight decay on biases/norms: standard SSL practice)."""
    decay, no_decay = [], []
    for param in params:
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=config.lr)


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


# ---- checkpoints: safetensors for tensors, JSON for the rest; nothing is pickled ----

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


_NOT_FINITE_HINT = "try a lower train.lr, train.amp=off or a higher objective.temperature"


def _check_finite(loss: torch.Tensor, stage_name: str, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(
            f"{stage_name} epoch {epoch + 1} step {step + 1}: loss is {loss.item()}; stopped, the last good "
            f"checkpoint is kept ({_NOT_FINITE_HINT})"
        )


def _check_finite_weights(model: nn.Module, stage_name: str, epoch: int) -> None:
    """A finite loss can still leave NaN/Inf weights after the last step; never checkpoint those."""
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise TrainingError(f"{stage_name} epoch {epoch + 1}: weight {name} is not finite; stopped, the last "
                                f"good checkpoint is kept ({_NOT_FINITE_HINT})")


class _StageTrainer:
    """The objects one stage's epochs share; :meth:`run_epoch` trains one epoch."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, loader: Loader, config: TrainConfig,
                 pseudo_labels: torch.Tensor | None, stage_name: str, progress: bool) -> None:
        self.model, self.loss_fn, self.loader, self.config = model, loss_fn, loader, config
        self.device = next(model.parameters()).device
        self.optimizer = build_optimizer(model.parameters(), config)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.ddp_model = _wrap_ddp(model, self.device)
        self.pseudo_labels, self.stage_name = pseudo_labels, stage_name
        self.show_progress = progress and distributed.is_main_process()
        self.total_steps = len(loader) * config.epochs
        if config.max_steps is not None:  # a per-stage cap (quick runs on large sets): the schedule ends there
            self.total_steps = min(self.total_steps, config.max_steps)
        self.warmup_steps = (config.warmup_steps if config.warmup_steps is not None
                             else int(config.warmup_epochs * len(loader)))

    def run_epoch(self, epoch: int, state: TrainState) -> dict[str, Any]:
        """Train one epoch (advancing ``state.step``); returns its metrics record."""
        self.loader.set_epoch(epoch)
        self.model.train()
        started, seen, steps, loss_sum, lr = time.perf_counter(), 0, 0, 0.0, self.config.lr
        bar = progress_bar(self.loader, desc=f"{self.stage_name} epoch {epoch + 1}/{self.config.epochs}",
                           enabled=self.show_progress)
        for batch in bar:
            if state.step >= self.total_steps:  # train.max_steps reached inside this epoch
                break
            lr = learning_rate(state.step, self.total_steps, self.warmup_steps, self.config.lr, self.config.schedule)
            loss = self._step(batch, lr, epoch, state.step)
            state.step += 1
            steps += 1
            size = len(batch["index"])
            seen += size
            loss_sum += loss * size
            if hasattr(bar, "set_postfix"):  # a tqdm bar (terminal only)
                bar.set_postfix(loss=f"{loss:.3f}")
            faults.reached("step")
        seconds = time.perf_counter() - started
        # The logged loss is the mean over every rank's samples, not rank 0's share of them.
        loss_sum, seen = distributed.sum_over_ranks([loss_sum, seen], self.device)
        return {"stage": self.stage_name, "epoch": epoch + 1, "loss": loss_sum / max(1, seen), "lr": lr,
                "images_per_s": seen / max(seconds, 1e-9), "seconds": seconds, "steps": steps}

    def _step(self, batch: Batch, lr: float, epoch: int, step: int) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        labels = None
        if self.pseudo_labels is not None:
            labels = self.pseudo_labels[batch["index"]]
        with _autocast(self.device, self.config.amp):
            loss = self.loss_fn(self.ddp_model, batch, labels)
        _check_finite(loss, self.stage_name, epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item()


def train(model: nn.Module, loss_fn: LossFn, loader: Loader, config: TrainConfig, stage_dir: Path,
          pseudo_labels: torch.Tensor | None = None, stage_name: str = "stage", progress: bool = True,
          extra_state: nn.Module | None = None) -> None:
    """Train ``model`` for ``config.epochs`` epochs, resuming from ``stage_dir``'s checkpoint if any.

    ``pseudo_labels`` (on the model's device, one per training sample) are indexed by each batch's
    ``"index"`` and passed to ``loss_fn``; None in stage 1. ``extra_state``: a module holding training state outside
    ``model`` that the loss updates (MoCo's queue and momentum encoder), checkpointed with it.

    After every epoch the checkpoint is written, then ``metrics.jsonl`` is rewritten (atomically)
    from the metrics the checkpoint holds, so after a crash and resume it has exactly one line per
    finished epoch.
    """
    trainer = _StageTrainer(model, loss_fn, loader, config, pseudo_labels, stage_name, progress)
    state = load_checkpoint(stage_dir, model, trainer.optimizer, trainer.scaler, extra_state) or TrainState()
    if state.epoch:
        logger.info("%s: resuming after epoch %d", stage_name, state.epoch)
    is_main = distributed.is_main_process()
    if is_main:
        write_jsonl(stage_dir / METRICS, state.metrics)  # drops lines of epochs past the checkpoint
    for epoch in range(state.epoch, config.epochs):
        if state.step >= trainer.total_steps:  # train.max_steps reached
            break
        record = trainer.run_epoch(epoch, state)
        _check_finite_weights(model, stage_name, epoch)
        state.epoch = epoch + 1
        state.metrics.append(record)
        rng = rank_rng_states()  # a collective: every rank takes part
        if is_main:
            save_checkpoint(stage_dir, model, trainer.optimizer, state, trainer.scaler, extra_state, rng)
            faults.reached("epoch")
            write_jsonl(stage_dir / METRICS, state.metrics)
            emit_metrics(record)
        distributed.barrier()
        logger.info("%s", json.dumps(record))


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    if not distributed.is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
