"""The learning-rate schedule and the optimiser of a stage.

:func:`learning_rate` is the rate of an optimiser step: linear warm-up over ``warmup_steps``, then
cosine decay to zero at ``total_steps`` (``cosine``) or the base rate (``constant``: the paper's CLIP
runs). :func:`build_optimizer` is AdamW or SGD with momentum, without weight decay on biases and
norms (``ndim <= 1``: standard SSL practice).

Example:
    >>> optimizer = build_optimizer(model.parameters(), config.train)
    >>> for group in optimizer.param_groups:
    ...     group["lr"] = learning_rate(step, total_steps, warmup_steps, config.train.lr, config.train.schedule)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from mcl.config import TrainConfig


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
