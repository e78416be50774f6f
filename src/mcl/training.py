"""One stage's optimisation loop: epochs, schedule, mixed precision, checkpoints, metrics.

Nothing here is specific to MCL: the stage loop (:mod:`mcl.stages`) hands in the task (how a batch
becomes a loss) and the batch sampler (where MCL's feature-aware negatives live).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mcl import distributed
from mcl.config import TrainConfig
from mcl.errors import TrainingError
from mcl.io import append_jsonl, load_tensors_with_metadata, save_tensors

logger = logging.getLogger("mcl")

CHECKPOINT = "checkpoint.safetensors"


class BatchSampler(Protocol):
    """Yields index arrays; reshuffles on :meth:`set_epoch`."""

    def set_epoch(self, epoch: int) -> None: ...
    def __iter__(self): ...
    def __len__(self) -> int: ...


class LossFn(Protocol):
    """``(model, indices, pseudo_labels) -> scalar loss`` for one batch."""

    def __call__(self, model: nn.Module, indices: np.ndarray, pseudo_labels: torch.Tensor | None) -> torch.Tensor: ...


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this rank's CUDA device when there is one, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return torch.device(name)


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
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


def save_checkpoint(stage_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    step: int, scaler: torch.amp.GradScaler | None) -> None:
    """Write the end-of-epoch checkpoint (tensors first, then the JSON that makes it valid)."""
    optimizer_tensors, optimizer_meta = _optimizer_tensors(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(optimizer_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"epoch": epoch, "step": step, "optimizer": optimizer_meta,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None}
    # One file holds tensors and metadata, so a crash can never pair one epoch's weights with another's.
    save_tensors(stage_dir / CHECKPOINT, tensors, metadata={"checkpoint": json.dumps(meta)})


def load_checkpoint(stage_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None) -> tuple[int, int] | None:
    """Restore the last epoch checkpoint; returns ``(epochs_done, steps_done)`` or None if there is none."""
    path = stage_dir / CHECKPOINT
    if not path.exists():
        return None
    tensors, metadata = load_tensors_with_metadata(path)
    meta = json.loads(metadata["checkpoint"])
    device = next(model.parameters()).device
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    _restore_optimizer(optimizer, {k: v.to(device) for k, v in tensors.items()}, meta["optimizer"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return int(meta["epoch"]), int(meta["step"])


def remove_checkpoint(stage_dir: Path) -> None:
    """Drop the resume checkpoint once the stage's final weights are recorded."""
    (stage_dir / CHECKPOINT).unlink(missing_ok=True)


def _check_finite(loss: torch.Tensor, stage_name: str, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(
            f"{stage_name} epoch {epoch + 1} step {step + 1}: loss is {loss.item()}; stopped, the last good "
            "checkpoint is kept (try a lower train.lr, train.amp=off or a higher objective.temperature)"
        )


def train(model: nn.Module, loss_fn: LossFn, sampler: BatchSampler, config: TrainConfig, stage_dir: Path,
          pseudo_labels: torch.Tensor | None = None, stage_name: str = "stage", progress: bool = True) -> None:
    """Train ``model`` for ``config.epochs`` epochs, resuming from ``stage_dir``'s checkpoint if any.

    ``pseudo_labels`` (on the model's device, one per training sample) are indexed per batch and
    passed to ``loss_fn``; None in stage 1.
    """
    device = next(model.parameters()).device
    optimizer = build_optimizer(model.parameters(), config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    resumed = load_checkpoint(stage_dir, model, optimizer, scaler)
    start_epoch, step = resumed or (0, 0)
    if resumed:
        logger.info("%s: resuming after epoch %d", stage_name, start_epoch)
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    ddp_model = _wrap_ddp(model, device)
    is_main = distributed.is_main_process()
    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        model.train()
        started, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(sampler, desc=f"{stage_name} epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not (progress and is_main))
        for indices in bar:
            lr = learning_rate(step, total_steps, warmup_steps, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch_labels = pseudo_labels[torch.as_tensor(indices, device=device)] if pseudo_labels is not None else None
            with _autocast(device, config.amp):
                loss = loss_fn(ddp_model, indices, batch_labels)
            _check_finite(loss, stage_name, epoch, step)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            seen += len(indices)
            loss_sum += loss.item() * len(indices)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        seconds = time.perf_counter() - started
        record = {"stage": stage_name, "epoch": epoch + 1, "loss": loss_sum / max(1, seen), "lr": lr,
                  "images_per_s": seen * distributed.world_size() / max(seconds, 1e-9), "seconds": seconds,
                  "steps": steps_per_epoch}
        if is_main:
            save_checkpoint(stage_dir, model, optimizer, epoch + 1, step, scaler)
            append_jsonl(stage_dir / "metrics.jsonl", record)
        distributed.barrier()
        logger.info("%s", json.dumps(record))


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    if not distributed.is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
