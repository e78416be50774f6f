"""One stage's optimisation loop: epochs, schedule, mixed precision, checkpoints, metrics.

Each epoch: every batch's loss (``loss_fn(model, batch, pseudo_labels[batch["index"]])``, under
autocast with ``train.amp``) -> finite check -> backward (grad-scaled for fp16) -> optimiser step at
:func:`~mcl.training.schedule.learning_rate`; then the end-of-epoch checkpoint
(:mod:`mcl.training.checkpoint`) and ``metrics.jsonl``.

Nothing here is specific to MCL: the stage loop (:mod:`mcl.stages`) hands in the task's loss (how a
batch becomes a loss) and the loader (:mod:`mcl.data.loader`, whose batch sampler is where MCL's
feature-aware negatives live). :func:`train` is the default ``fit`` of
:func:`mcl.stages.run_stages`; any function with its signature (:class:`Fit`) can replace it.

Example:
    >>> train(model, task.loss, task.loader(sampler), config.train, run_dir / "stage-1", pseudo_labels=None)
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from mcl import distributed, faults
from mcl.config import TrainConfig
from mcl.data.loader import Batch, Loader
from mcl.errors import TrainingError
from mcl.files import write_jsonl
from mcl.logging_utils import emit_metrics, progress_bar
from mcl.run import METRICS_FILE as METRICS
from mcl.training.checkpoint import TrainState, load_checkpoint, rank_rng_states, save_checkpoint
from mcl.training.schedule import build_optimizer, learning_rate

logger = logging.getLogger("mcl")


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


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


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
