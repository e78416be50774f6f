"""Backbone + projection head: the encoder one MCL stage trains."""

from __future__ import annotations

import torch
from torch import nn


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


class ContrastiveEncoder(nn.Module):
    """Any ``nn.Module`` backbone followed by a projection head.

    The backbone must map images to ``(B, F)`` features; ``feature_dim`` is read from the backbone
    (attribute ``feature_dim``) or passed explicitly.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None, feature_dim: int | None = None,
                 projection_dim: int = 128, hidden_dim: int = 512) -> None:
        super().__init__()
        feature_dim = feature_dim or getattr(backbone, "feature_dim", None)
        if feature_dim is None:
            raise ValueError("pass feature_dim= or give the backbone a 'feature_dim' attribute")
        self.backbone = backbone
        self.head = head if head is not None else ProjectionHead(feature_dim, hidden_dim, projection_dim)
        self.feature_dim = int(feature_dim)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features (what MCL clusters, integrates and evaluates)."""
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Projected embeddings (what the contrastive loss sees)."""
        return self.head(self.backbone(images))
