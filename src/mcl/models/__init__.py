"""Backbones and encoders, built by name from a small registry (timm-style).

``BACKBONES`` (:mod:`mcl.models.backbones`) holds ``convnet``, ``resnet18``, ``resnet50``, ``vit``,
``vit_tiny``, ``vit_small`` and resolves ``timm:<model>`` / ``torchvision:<model>`` lazily;
:func:`build_encoder` puts a fresh projection head on one. Two-tower (CLIP-style) models live in
:mod:`mcl.models.two_tower`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from mcl.models import convnet as _convnet  # noqa: F401 - registers its backbone
from mcl.models import resnet as _resnet  # noqa: F401
from mcl.models import vit as _vit  # noqa: F401
from mcl.models.backbones import BACKBONES, build_backbone, check_backbone, register_backbone
from mcl.models.convnet import ConvNet
from mcl.models.encoder import ContrastiveEncoder, ProjectionHead
from mcl.models.registry import Preprocess, Registry
from mcl.models.resnet import ResNet18, ResNet50
from mcl.models.vit import VisionTransformer


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``no_grad`` for the block; the previous train/eval mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def build_encoder(backbone: str, width: float | None = 1.0, projection_dim: int = 128, hidden_dim: int = 512,
                  **backbone_kwargs: Any) -> ContrastiveEncoder:
    """Backbone (``build_backbone(backbone, width, **backbone_kwargs)``) + fresh projection head."""
    return ContrastiveEncoder(build_backbone(backbone, width, **backbone_kwargs), projection_dim=projection_dim,
                              hidden_dim=hidden_dim)


__all__ = ["BACKBONES", "ContrastiveEncoder", "ConvNet", "Preprocess", "ProjectionHead", "Registry", "ResNet18",
           "ResNet50", "VisionTransformer", "build_backbone", "build_encoder", "check_backbone", "evaluating",
           "register_backbone", "unwrap_model"]
