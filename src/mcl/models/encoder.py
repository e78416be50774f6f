"""Backbone + projection head: the encoder one MCL stage trains.

:class:`ContrastiveEncoder` takes any backbone mapping ``(B, 3, H, W)`` images to ``(B, F)``
features. ``F`` is read, in this order, from ``feature_dim=``, the backbone's ``feature_dim``
attribute (ours), ``num_features`` (timm; a classifier head is removed with ``reset_classifier(0)``),
or, for torchvision classifiers, the ``fc`` / ``classifier`` / ``heads`` / ``head`` layer, which
:func:`strip_classifier` replaces by ``Identity``. The backbone's ``preprocess``
(:class:`~mcl.models.registry.Preprocess`; identity if absent) is applied to the [0, 1] images first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mcl.models.registry import Preprocess

_HEAD_NAMES = ("fc", "classifier", "heads", "head")


class ProjectionHead(nn.Module):
    """SimCLR's MLP head: Linear-BN-ReLU-Linear. The loss sees its output; evaluation uses the backbone."""

    def __init__(self, input_dim: int, hidden_dim: int = 512, output_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Project backbone features to the contrastive space."""
        return self.net(features)


def strip_classifier(model: nn.Module) -> int:
    """Replace a torchvision-style classification head by ``Identity``; returns the feature size it took.

    The head is the first of ``fc``, ``classifier``, ``heads``, ``head`` that is a ``Linear`` or a
    ``Sequential`` containing one (its first ``Linear``'s ``in_features`` is the feature size).
    """
    for name in _HEAD_NAMES:
        head = getattr(model, name, None)
        linears = [head] if isinstance(head, nn.Linear) else (
            [m for m in head.modules() if isinstance(m, nn.Linear)] if isinstance(head, nn.Sequential) else [])
        if linears:
            setattr(model, name, nn.Identity())
            return int(linears[0].in_features)
    raise ValueError(f"{type(model).__name__}: no 'feature_dim'/'num_features' attribute and no fc/classifier "
                     "head to strip; pass feature_dim=")


def infer_feature_dim(backbone: nn.Module) -> int:
    """The width of ``backbone``'s output features (may remove a timm/torchvision classifier head)."""
    if getattr(backbone, "feature_dim", None) is not None:
        return int(backbone.feature_dim)
    if getattr(backbone, "num_features", None) is not None:  # timm
        if getattr(backbone, "num_classes", 0) and hasattr(backbone, "reset_classifier"):
            backbone.reset_classifier(0)
        return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)
    return strip_classifier(backbone)


class ContrastiveEncoder(nn.Module):
    """Any ``nn.Module`` backbone followed by a projection head (see the module docstring for ``feature_dim``)."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None, feature_dim: int | None = None,
                 projection_dim: int = 128, hidden_dim: int = 512) -> None:
        super().__init__()
        feature_dim = feature_dim or infer_feature_dim(backbone)
        self.backbone = backbone
        self.head = head if head is not None else ProjectionHead(feature_dim, hidden_dim, projection_dim)
        self.feature_dim = int(feature_dim)
        preprocess = getattr(backbone, "preprocess", None)
        self.preprocess: Preprocess = preprocess if isinstance(preprocess, Preprocess) else Preprocess()
        if not self.preprocess.is_identity:
            # Not persistent: the state_dict (and checkpoints) keep their keys.
            self.register_buffer("_mean", torch.tensor(self.preprocess.mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("_std", torch.tensor(self.preprocess.std).view(1, -1, 1, 1), persistent=False)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Apply the backbone's preprocessing to ``(B, 3, H, W)`` images in [0, 1] (identity: unchanged)."""
        if self.preprocess.is_identity:
            return images  # bit-identical to feeding the backbone directly
        size = self.preprocess.input_size
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (images - self._mean) / self._std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features (what MCL clusters, integrates and evaluates)."""
        return self.backbone(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Projected embeddings (what the contrastive loss sees)."""
        return self.head(self.backbone(self.prepare(images)))
