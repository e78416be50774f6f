"""mcl.models.resnet: ResNet-50 (bottleneck, CIFAR or ImageNet stem, width) beside ResNet-18."""

from __future__ import annotations

import pytest
import torch

from mcl.models import ResNet18, ResNet50, build_backbone, build_encoder


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("cifar_stem", [True, False])
def test_resnet50_shapes(size: int, cifar_stem: bool) -> None:
    model = build_backbone("resnet50", width=0.125, cifar_stem=cifar_stem)
    assert isinstance(model, ResNet50) and model.feature_dim == 256  # 4 * 512 * 0.125
    assert model(torch.rand(2, 3, size, size)).shape == (2, 256)
    assert sum(len(stage) for stage in model.layers) == 16  # [3, 4, 6, 3] bottlenecks


def test_resnet50_full_width_parameter_count() -> None:
    model = ResNet50()
    assert model.feature_dim == 2048
    # torchvision's resnet50 without its fc layer has 23.5 M parameters (the CIFAR stem has fewer).
    assert 23.4e6 < sum(p.numel() for p in ResNet50(cifar_stem=False).parameters()) < 23.6e6


def test_resnet50_gradients_flow() -> None:
    encoder = build_encoder("resnet50", 0.125, 8, 16)
    encoder(torch.rand(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_resnet18_keeps_its_state_dict_layout() -> None:
    keys = set(ResNet18(width=0.25).state_dict())
    assert {"stem.0.weight", "stem.1.running_mean", "layers.1.0.shortcut.0.weight", "layers.3.1.bn2.bias"} <= keys
    assert build_backbone("resnet18", width=0.25, stem="imagenet")(torch.rand(1, 3, 64, 64)).shape == (1, 128)
