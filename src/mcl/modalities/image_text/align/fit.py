"""The alignment of the aligned stage 0 (LiT, Zhai et al. 2022) on cached locked features.

Both towers are locked except the last ``unlocked_image_groups`` groups of the image tower; only the
two linear projections, the temperature and those groups train, with the CLIP loss (identical
captions are no negatives: ``caption_ids``). Since the locked parts never change, their outputs are
computed **once** (the image tower up to its first unlocked group,
:func:`~mcl.models.two_tower.split_image_tower`; the text tower per distinct caption; no augmentation)
and training runs on those cached features: thousands of steps cost seconds on a CPU. AdamW on every
trainable parameter, the learning rate :func:`mcl.training.schedule.learning_rate`'s linear warm-up then
cosine decay to zero at ``steps``.

The loop is its own, not :func:`mcl.training.train`: it steps on random batches of cached tensors (no
loader, epochs or checkpoints) and its optimiser decays every parameter, where the trainer's spares
biases and norms; the aligned model is cached under a digest of its settings, so its weights must not
change.

Example:
    >>> stats = align_towers(model, build_corpus(settings), settings)   # trains model in place
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from mcl.embedding import images_to_tensor
from mcl.logging_utils import progress_bar
from mcl.modalities.image_text.align.corpus import CaptionedCorpus
from mcl.modalities.image_text.align.settings import AlignSettings
from mcl.models import evaluating
from mcl.models.two_tower import PretrainedTowers, split_image_tower
from mcl.objectives.clip import CLIPLoss, clamp_logit_scale_
from mcl.training.schedule import learning_rate


def align_towers(model: PretrainedTowers, corpus: CaptionedCorpus, settings: AlignSettings,
                 progress: bool = False) -> dict[str, float]:
    """Train ``model``'s projections (and unlocked image groups) on ``corpus`` in place; returns timings/loss."""
    started = time.perf_counter()
    model.lock_text(0)
    model.lock_image(settings.unlocked_image_groups)
    prefix, suffix = split_image_tower(model, settings.unlocked_image_groups)
    distinct, caption_ids = np.unique(np.asarray(corpus.captions, dtype=str), return_inverse=True)
    with evaluating(model):
        image_cache = _cached(lambda batch: prefix(images_to_tensor(batch)), corpus.images)
        text_cache = _cached(lambda batch: model.text_features(model.tokenize(list(batch))), [str(c) for c in distinct])
    cached = time.perf_counter()
    caption_ids_t = torch.from_numpy(caption_ids.reshape(-1))
    model.train()
    with _single_thread():
        losses = _train_loop(model, suffix, image_cache, text_cache, caption_ids_t, settings, progress)
    clamp_logit_scale_(model.logit_scale)
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return {"cache_seconds": round(cached - started, 1), "train_seconds": round(time.perf_counter() - cached, 1),
            "final_loss": round(float(np.mean(tail)), 4), "distinct_captions": len(distinct)}


@torch.no_grad()
def _cached(fn: Callable[[Any], torch.Tensor], items: Any, batch_size: int = 128) -> torch.Tensor:
    return torch.cat([fn(items[start:start + batch_size]) for start in range(0, len(items), batch_size)])


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """One intra-op thread for the block: steps on cached features are small matrix products, for which
    a second thread only adds synchronisation (much slower per step on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _lr_factor(step: int, settings: AlignSettings) -> float:
    """The learning rate of ``step`` as a multiple of ``settings.lr`` (``LambdaLR`` multiplies it by the base rate)."""
    return learning_rate(step, settings.steps, settings.warmup_steps, 1.0)


def _train_loop(model: PretrainedTowers, suffix: Callable[[torch.Tensor], torch.Tensor], image_cache: torch.Tensor,
                text_cache: torch.Tensor, caption_ids: torch.Tensor, settings: AlignSettings,
                progress: bool) -> list[float]:
    """AdamW steps on random batches of the cached features; returns the loss of every step."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, settings))
    loss_fn, generator = CLIPLoss(), torch.Generator().manual_seed(settings.seed)
    n, batch_size = len(caption_ids), min(settings.batch_size, len(caption_ids))
    order, position, losses = torch.randperm(n, generator=generator), 0, []
    for _ in progress_bar(range(settings.steps), "aligning towers", progress):
        if position + batch_size > n:
            order, position = torch.randperm(n, generator=generator), 0
        rows = order[position:position + batch_size]
        position += batch_size
        clamp_logit_scale_(model.logit_scale)
        ids = caption_ids[rows]
        image_emb = model.image_projection(suffix(image_cache[rows]))
        text_emb = model.text_projection(text_cache[ids])
        loss = loss_fn(image_emb, text_emb, model.logit_scale, caption_ids=ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    return losses
