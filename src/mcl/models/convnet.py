"""A small ConvNet backbone for fast CPU runs."""

from __future__ import annotations

import torch
from torch import nn

from mcl.models.backbones import register_backbone


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@register_backbone("convnet")
class ConvNet(nn.Module):
    """Four conv-BN-ReLU stages (widths 32-64-128-256 times ``width``), global average pool.

    About 0.4 M parameters at ``width=1``: small enough to train 32 px Trifeature stages on a CPU.
    """

    def __init__(self, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        channels = [max(8, int(round(c * width))) for c in (32, 64, 128, 256)]
        blocks, previous = [], in_channels
        for index, out in enumerate(channels):
            blocks.append(_conv_block(previous, out, stride=1 if index == 0 else 2))
            previous = out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> ``(B, feature_dim)`` features."""
        return self.pool(self.features(x)).flatten(1)
