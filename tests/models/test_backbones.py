"""mcl.models.backbones + encoder: the backbone registry, user backbones, width, ContrastiveEncoder dims/preprocess."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mcl.errors import ConfigError
from mcl.models import (
    BACKBONES,
    ContrastiveEncoder,
    ConvNet,
    Preprocess,
    build_backbone,
    build_encoder,
    check_backbone,
    register_backbone,
)


@pytest.fixture
def mine():  # noqa: ANN201 - the registered class
    @register_backbone("mine", preprocess=Preprocess((0.5,) * 3, (0.5,) * 3, None))
    class Mine(nn.Module):
        def __init__(self, depth: int = 1, channels: int = 4) -> None:
            super().__init__()
            self.net = nn.Sequential(*(nn.Conv2d(3 if i == 0 else channels, channels, 3) for i in range(depth)))
            self.feature_dim = channels

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).mean((2, 3))

    yield Mine
    BACKBONES.unregister("mine")


def test_builtin_backbones_registered() -> None:
    assert {"convnet", "resnet18", "resnet50", "vit", "vit_tiny", "vit_small"} <= set(BACKBONES.names())


def test_user_backbone_by_name(mine) -> None:  # noqa: ANN001
    check_backbone("mine", width=1.0, depth=2)  # what config validation calls
    encoder = build_encoder("mine", 1.0, 8, 16, depth=2, channels=6)
    assert isinstance(encoder.backbone, mine) and len(encoder.backbone.net) == 2
    assert encoder(torch.rand(3, 3, 16, 16)).shape == (3, 8) and encoder.feature_dim == 6
    assert encoder.preprocess == Preprocess((0.5,) * 3, (0.5,) * 3, None)  # from the registry entry
    with pytest.raises(ConfigError, match=r"backbone 'mine' takes no argument\(s\) 'dpth' \(did you mean 'depth'"):
        check_backbone("mine", dpth=2)
    with pytest.raises(ConfigError, match="config key 'model.width': backbone 'mine' has no width multiplier"):
        build_backbone("mine", width=0.5)


def test_width_only_where_accepted() -> None:
    assert build_backbone("convnet", width=0.5).feature_dim == 128
    assert build_backbone("convnet").feature_dim == 256
    assert build_backbone("vit", width=1.0, depth=1, dim=32, heads=2).feature_dim == 32
    with pytest.raises(ConfigError, match="model.width"):
        check_backbone("vit_tiny", width=2.0)


def test_unknown_backbone_message() -> None:
    with pytest.raises(ConfigError, match=r"^config key 'model.backbone': unknown backbone 'resnet05' \(did you "
                                          r"mean 'resnet50'\?\); registered: .*convnet.*timm:<name>"):
        check_backbone("resnet05")


def test_default_encoder_is_unchanged_by_preprocess() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("convnet", 0.25, 8, 16).eval()
    assert encoder.preprocess.is_identity
    assert list(encoder.buffers()) == list(encoder.backbone.buffers()) + list(encoder.head.buffers())
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder.features(images), encoder.backbone(images))


def test_encoder_applies_backbone_preprocess() -> None:
    backbone = ConvNet(width=0.25).eval()
    backbone.preprocess = Preprocess((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), 16)
    encoder = ContrastiveEncoder(backbone, projection_dim=4, hidden_dim=8).eval()
    assert set(encoder.state_dict()) == {f"backbone.{k}" for k in backbone.state_dict()} | {
        f"head.{k}" for k in encoder.head.state_dict()}  # the normalisation constants are not saved
    images = torch.rand(2, 3, 32, 32)
    expected_input = (nn.functional.interpolate(images, size=(16, 16), mode="bilinear", antialias=True)
                      - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2
    with torch.no_grad():
        assert torch.allclose(encoder.features(images), backbone(expected_input), atol=1e-6)


class _TimmLike(nn.Module):
    """timm's feature API: ``num_features``, ``num_classes``, ``reset_classifier``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features, self.num_classes = 5, 10
        self.head = nn.Linear(5, 10)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes, self.head = num_classes, nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class _TorchvisionLike(nn.Module):
    def __init__(self, head: str, sequential: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 7, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        layer = nn.Linear(7, 10)
        setattr(self, head, nn.Sequential(nn.Dropout(0.1), layer) if sequential else layer)
        self.head_name = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.head_name)(self.body(x))


@pytest.mark.parametrize("backbone, dim", [(_TimmLike(), 5), (_TorchvisionLike("fc", False), 7),
                                          (_TorchvisionLike("classifier", True), 7)])
def test_encoder_infers_feature_dim_and_strips_heads(backbone: nn.Module, dim: int) -> None:
    encoder = ContrastiveEncoder(backbone, projection_dim=4, hidden_dim=8)
    assert encoder.feature_dim == dim
    assert encoder.features(torch.rand(2, 3, 8, 8)).shape == (2, dim)  # the classifier head is gone
    assert encoder(torch.rand(2, 3, 8, 8)).shape == (2, 4)


def test_encoder_explicit_feature_dim_and_unknown() -> None:
    body = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert ContrastiveEncoder(body, feature_dim=5, projection_dim=4, hidden_dim=8).feature_dim == 5
    with pytest.raises(ValueError, match="pass feature_dim="):
        ContrastiveEncoder(body)


def test_user_backbone_named_in_yaml_config(mine, tmp_path) -> None:  # noqa: ANN001
    import dataclasses

    from mcl.config import ModelConfig, load_config

    if "backbone_args" not in {f.name for f in dataclasses.fields(ModelConfig)}:
        pytest.skip("config has no model.backbone_args yet")
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  backbone: mine\n  backbone_args: {depth: 2}\n")
    model = load_config(path).model
    encoder = build_encoder(model.backbone, model.width, 8, 16, **model.backbone_args)
    assert isinstance(encoder.backbone, mine) and len(encoder.backbone.net) == 2
    path.write_text("model:\n  backbone: mine\n  backbone_args: {dpth: 2}\n")
    with pytest.raises(ConfigError, match="'dpth'"):
        load_config(path)
