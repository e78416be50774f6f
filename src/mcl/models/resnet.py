"""CIFAR-style ResNet-18 and ResNet-50 in plain torch, with a channel width multiplier.

The CIFAR stem (3x3 conv, stride 1, no max-pool) is what SimCLR/MCL CIFAR numbers are reported
with; the ImageNet stem (7x7/2 + max-pool) throws away most of a 32 px image. ResNet-18 takes
``stem="cifar"|"imagenet"``, ResNet-50 ``cifar_stem=True|False``.

Shapes: ``(B, 3, H, W)`` -> ``(B, feature_dim)``; ``feature_dim`` is ``512 * width`` (ResNet-18,
basic blocks [2, 2, 2, 2]) or ``4 * 512 * width`` (ResNet-50, bottleneck blocks [3, 4, 6, 3],
expansion 4). Any input size works (global average pooling).

Example:
    >>> ResNet50(width=0.25)(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 512])
"""

from __future__ import annotations

import torch
from torch import nn

from mcl.models.backbones import register_backbone


def _stem(in_channels: int, channels: int, cifar: bool) -> nn.Sequential:
    if cifar:
        return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                             nn.ReLU())
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


def _widths(width: float) -> list[int]:
    return [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's v1.5), 1x1 expand (x4), residual connection."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual bottleneck block."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


@register_backbone("resnet18")
class ResNet18(nn.Module):
    """ResNet-18 backbone with a width multiplier; returns pooled features (512 * width)."""

    def __init__(self, width: float = 1.0, stem: str = "cifar", in_channels: int = 3) -> None:
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        widths = _widths(width)
        self.stem = _stem(in_channels, widths[0], stem == "cifar")
        layers, previous = [], widths[0]
        for index, out in enumerate(widths):
            stride = 1 if index == 0 else 2
            layers.append(nn.Sequential(BasicBlock(previous, out, stride), BasicBlock(out, out, 1)))
            previous = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> ``(B, feature_dim)`` features."""
        return self.pool(self.layers(self.stem(x))).flatten(1)


@register_backbone("resnet50")
class ResNet50(nn.Module):
    """ResNet-50 (bottleneck blocks [3, 4, 6, 3]) with a width multiplier; pooled features (2048 * width)."""

    def __init__(self, width: float = 1.0, cifar_stem: bool = True, in_channels: int = 3) -> None:
        super().__init__()
        widths = _widths(width)
        self.stem = _stem(in_channels, widths[0], cifar_stem)
        layers, previous = [], widths[0]
        for index, (channels, blocks) in enumerate(zip(widths, (3, 4, 6, 3), strict=True)):
            stride = 1 if index == 0 else 2
            stage = [Bottleneck(previous, channels, stride)]
            previous = channels * Bottleneck.expansion
            stage += [Bottleneck(previous, channels, 1) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> ``(B, feature_dim)`` features."""
        return self.pool(self.layers(self.stem(x))).flatten(1)
