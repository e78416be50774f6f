"""MoCo (v2 queue + v3 in-batch keys) with MCL's feature-aware negatives.

Two pieces, used together by :class:`mcl.tasks.ImageContrastiveTask` when ``objective.name: moco``:

- :class:`MoCoLoss`: InfoNCE of queries against the keys of the (global) batch plus a queue of keys
  from earlier batches. Every queue entry keeps the pseudo-label (and sample index) it was enqueued
  with, so MCL's restriction applies to queue negatives exactly as to in-batch ones.
- :class:`MomentumEncoder`: the key encoder, an exponential moving average (EMA) of the query
  encoder's parameters.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mcl import distributed
from mcl.models import unwrap_model
from mcl.objectives.core import info_nce, l2_normalize, same_group_mask
from mcl.objectives.registry import register_objective

EMPTY = -1
"""Pseudo-label of a queue slot that holds no key yet."""


@register_objective("moco")
class MoCoLoss(nn.Module):
    r"""Momentum-contrast InfoNCE with a labelled queue of negatives.

    Query :math:`q_i` (from the trained encoder) has the key :math:`k_i` of the other view (from the
    momentum encoder, no gradient) as its positive. Its candidates are the keys of the whole
    (all-ranks) batch :math:`K` and the queue :math:`Q`; with pseudo-labels :math:`g` the negatives are

    .. math::
        N(i) = \{k_j \in K : j \ne i,\ g_j = g_i\} \cup \{u \in Q : g_u = g_i,\ \mathrm{idx}_u \ne \mathrm{idx}_i\}

    (no pseudo-labels: every other key and every filled queue slot), and

    .. math::
        \ell_i = -\frac{q_i^\top k_i}{\tau}
                 + \log\Big(e^{q_i^\top k_i/\tau} + \sum_{k\in N(i)} e^{q_i^\top k/\tau}\Big).

    A queue entry with the anchor's own sample index (an older key of the same image, possible when
    the queue is longer than an epoch) is never a negative. Call :meth:`enqueue` after the loss and
    :meth:`reset` when the pseudo-labels change (each stage): old entries carry old labels.

    Example:
        >>> loss_fn = MoCoLoss(temperature=0.2, queue_size=4096)
        >>> loss = loss_fn(queries, keys, pseudo_labels, indices)
        >>> loss_fn.enqueue(keys, pseudo_labels, indices)
    """

    queue: torch.Tensor
    queue_labels: torch.Tensor
    queue_indices: torch.Tensor

    def __init__(self, temperature: float = 0.2, queue_size: int = 4096) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        self.temperature = temperature
        self.queue_size = queue_size
        # Persistent buffers: a resumed stage continues with the queue it had (see MoCoState).
        self.register_buffer("queue", torch.zeros(0, 0))
        self.register_buffer("queue_labels", torch.full((queue_size,), EMPTY, dtype=torch.long))
        self.register_buffer("queue_indices", torch.full((queue_size,), EMPTY, dtype=torch.long))
        self.pointer = 0

    def get_extra_state(self) -> torch.Tensor:
        """The ring buffer's write position, as a tensor so that it fits a safetensors checkpoint."""
        return torch.tensor(self.pointer, dtype=torch.long)

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.pointer = int(state)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        # The queue's width is only known once keys arrive: take the saved queue's shape.
        saved = state_dict.get(prefix + "queue")
        if saved is not None and saved.shape != self.queue.shape:
            self.queue = torch.zeros(saved.shape, dtype=saved.dtype, device=self.queue_labels.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset(self) -> None:
        """Empty the queue (new stage: new pseudo-labels, new key encoder)."""
        self.queue_labels.fill_(EMPTY)
        self.queue_indices.fill_(EMPTY)
        self.pointer = 0

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, pseudo_labels: torch.Tensor | None = None,
                indices: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of the local queries against the global batch's keys and the queue."""
        local_rows, device = queries.shape[0], queries.device
        batch_keys = distributed.gather_no_grad(l2_normalize(keys.detach().float()))  # the queue is float32
        offset = distributed.local_offset(local_rows, device)
        positive_index = torch.arange(local_rows, device=device) + offset
        labels = None if pseudo_labels is None else distributed.gather_no_grad(pseudo_labels)
        in_batch = same_group_mask(pseudo_labels, labels, local_rows, batch_keys.shape[0], device)
        in_batch[torch.arange(local_rows, device=device), positive_index] = False
        candidates, mask = batch_keys, in_batch
        if self.queue.shape[0]:
            candidates = torch.cat([batch_keys, self.queue])
            mask = torch.cat([in_batch, self._queue_mask(pseudo_labels, indices, local_rows)], dim=1)
        logits = l2_normalize(queries.float()) @ candidates.T / self.temperature
        return info_nce(logits, positive_index, mask)

    def _queue_mask(self, pseudo_labels: torch.Tensor | None, indices: torch.Tensor | None,
                    rows: int) -> torch.Tensor:
        filled = (self.queue_labels != EMPTY)[None, :].expand(rows, -1)
        mask = filled & same_group_mask(pseudo_labels, self.queue_labels, rows, self.queue_size, filled.device)
        if indices is not None:
            mask = mask & (indices[:, None] != self.queue_indices[None, :])
        return mask

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, pseudo_labels: torch.Tensor | None = None,
                indices: torch.Tensor | None = None) -> None:
        """Add the global batch's keys (gathered from all ranks) to the ring buffer, oldest out first."""
        if self.queue_size == 0:
            return
        keys = distributed.gather_no_grad(l2_normalize(keys.detach().float()))
        rows, device = keys.shape[0], keys.device
        if pseudo_labels is None:  # stage 1: one group
            labels = torch.zeros(rows, dtype=torch.long, device=device)
        else:
            labels = distributed.gather_no_grad(pseudo_labels)
        if indices is None:  # unknown sample: never matches an anchor
            indices = torch.full((rows,), EMPTY, dtype=torch.long, device=device)
        else:
            indices = distributed.gather_no_grad(indices)
        if self.queue.shape != (self.queue_size, keys.shape[1]) or self.queue.device != device:
            self.queue = torch.zeros(self.queue_size, keys.shape[1], device=device)
            self.queue_labels = self.queue_labels.to(device)
            self.queue_indices = self.queue_indices.to(device)
        keep = min(rows, self.queue_size)  # a batch longer than the queue keeps its last keys
        position = (self.pointer + torch.arange(keep, device=device)) % self.queue_size
        self.queue[position] = keys[-keep:]
        self.queue_labels[position] = labels[-keep:].long()
        self.queue_indices[position] = indices[-keep:].long()
        self.pointer = (self.pointer + keep) % self.queue_size


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """``target_param = momentum * target_param + (1 - momentum) * source_param`` for every parameter.

    Buffers (BatchNorm statistics) are not averaged: the key encoder keeps its own, as in MoCo.
    """
    for target_param, source_param in zip(target.parameters(), source.parameters(), strict=True):
        target_param.lerp_(source_param.detach(), 1.0 - momentum)


class MoCoState(nn.Module):
    """Everything a MoCo stage's loss updates besides the trained model: key encoder and queue.

    Handed to the training loop as its ``extra_state``, so the epoch checkpoint holds the momentum
    encoder's weights (and BatchNorm statistics), the queue of keys with their pseudo-labels and
    sample indices, and the queue's write position: a resumed stage continues exactly where it stopped.
    """

    def __init__(self, key_encoder: nn.Module, loss: MoCoLoss) -> None:
        super().__init__()
        self.key_encoder = key_encoder
        self.loss = loss


class MomentumEncoder:
    """The key encoder: an EMA copy of whichever query encoder it is asked to :meth:`follow`.

    :meth:`follow` is called at the start of every loss computation. The first time it sees a model
    (a new stage) it deep-copies it; afterwards it applies one EMA step. Because the training loop
    steps the optimiser right after each loss, "EMA at the start of the next loss" is exactly
    "EMA after every optimiser step" (the order of MoCo v3's reference code), with no hook into the
    loop. To checkpoint it, start following the model before training and hand a
    :class:`MoCoState` to the loop (as :class:`mcl.tasks.ImageContrastiveTask` does).

    Example:
        >>> keys = MomentumEncoder(0.99)
        >>> if keys.follow(model):      # new model: start of a stage
        ...     loss_fn.reset()         # the queue's keys came from another encoder
        >>> k = keys(images)
    """

    def __init__(self, momentum: float = 0.99) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.encoder: nn.Module | None = None
        self._source: nn.Module | None = None

    def follow(self, model: nn.Module) -> bool:
        """Track ``model`` (possibly DDP/compile-wrapped); returns True when it is a new model."""
        source = unwrap_model(model)
        if source is not self._source or self.encoder is None:
            self._source = source
            self.encoder = copy.deepcopy(source).requires_grad_(False)
            self.encoder.train(source.training)
            return True
        ema_update_(self.encoder, source, self.momentum)
        return False

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Keys of ``images`` (no gradient)."""
        if self.encoder is None:
            raise RuntimeError("call follow(model) before computing keys")
        return self.encoder(images)
