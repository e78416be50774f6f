"""Batched embedding of images and texts under eval mode and ``no_grad``, L2-normalised, on the CPU.

Shared by both integrations (:meth:`mcl.modalities.image_text.multistage.MultistageTwoTower.embed`, the input
conversion of :class:`mcl.integration.MultistageEncoder`) and every
evaluator (zero-shot, retrieval, MMVP), so all of them encode exactly alike.

Example:
    >>> encode_images(model, images_uint8)          # (N, D) float32, rows L2-normalised
    >>> encode_texts(model, ["a red circle"])       # (1, D)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from mcl.augment import to_float_images
from mcl.models import evaluating
from mcl.models.two_tower import tokens_to
from mcl.objectives.core import l2_normalize

ImageBatch = np.ndarray | torch.Tensor


def images_to_tensor(images: ImageBatch) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` (array or tensor) -> float ``(N, 3, H, W)`` in [0, 1]; float NCHW passes."""
    # torch.tensor copies: table images are often read-only memory maps; np.asarray also reads array-likes
    # such as a streamed table's rows (mcl.data.table.disk.DiskImages).
    tensor = images if torch.is_tensor(images) else torch.tensor(np.asarray(images))
    if tensor.dtype == torch.uint8:
        if tensor.ndim != 4 or tensor.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (N, H, W, 3), got {tuple(tensor.shape)}")
        return to_float_images(tensor)
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"float images must be (N, 3, H, W) in [0, 1], got {tuple(tensor.shape)}")
    return tensor.float()


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s (first) parameters."""
    return next(model.parameters()).device


def _encode_batched(model: nn.Module, items: ImageBatch | Sequence[str], batch_size: int,
                    encode: Callable[[Any, torch.device], torch.Tensor]) -> torch.Tensor:
    """L2-normalised ``(N, D)`` float32 CPU embeddings of ``encode(items[batch], device)``, batch by batch."""
    device, out = model_device(model), []
    with evaluating(model):
        for start in range(0, len(items), batch_size):
            out.append(l2_normalize(encode(items[start:start + batch_size], device).float()).cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def encode_images(model: nn.Module, images: ImageBatch, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised ``(N, D)`` float32 image embeddings on the CPU."""
    return _encode_batched(model, images, batch_size,
                           lambda batch, device: model.encode_image(images_to_tensor(batch).to(device)))


def encode_texts(model: nn.Module, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised ``(N, D)`` float32 text embeddings on the CPU."""
    return _encode_batched(model, texts, batch_size,
                           lambda batch, device: model.encode_text(tokens_to(model.tokenize(list(batch)), device)))


class Embedder(Protocol):
    """What the evaluators embed with: normalised ``(N, D)`` embeddings, as :func:`encode_images` /
    :func:`encode_texts` of one model give them (:class:`ModelEmbedder`), or reused ones already
    computed (:class:`mcl.evaluation.member_embeddings.RepresentationEmbedder`)."""

    def images(self, images: ImageBatch) -> torch.Tensor:
        """L2-normalised ``(N, D)`` float32 embeddings of uint8 ``(N, H, W, 3)`` images, on the CPU."""
        ...

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised ``(N, D)`` float32 embeddings of ``texts``, on the CPU."""
        ...


@dataclass(frozen=True)
class ModelEmbedder:
    """:class:`Embedder` of one two-tower ``model``: encodes on every call."""

    model: nn.Module
    batch_size: int = 256

    def images(self, images: ImageBatch) -> torch.Tensor:
        """:func:`encode_images` of the model."""
        return encode_images(self.model, images, self.batch_size)

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """:func:`encode_texts` of the model."""
        return encode_texts(self.model, texts, self.batch_size)
