"""Backbones and encoders, built by name from a small registry (timm-style)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from mcl.models.convnet import ConvNet
from mcl.models.encoder import ContrastiveEncoder, ProjectionHead
from mcl.models.resnet import ResNet18

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "convnet": ConvNet,
    "resnet18": ResNet18,
}


def build_backbone(name: str, width: float = 1.0) -> nn.Module:
    """Instantiate a registered backbone."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](width=width)


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


def build_encoder(backbone: str, width: float = 1.0, projection_dim: int = 128,
                  hidden_dim: int = 512) -> ContrastiveEncoder:
    """Backbone + fresh projection head."""
    return ContrastiveEncoder(build_backbone(backbone, width), projection_dim=projection_dim,
                              hidden_dim=hidden_dim)


__all__ = ["BACKBONES", "ContrastiveEncoder", "ConvNet", "ProjectionHead", "ResNet18", "build_backbone",
           "build_encoder", "evaluating",
           "unwrap_model"]
