"""mcl.models.vit: shapes at 32 and 64 px, pooling, gradients, presets, registry round trip."""

from __future__ import annotations

import pytest
import torch

from mcl.models import BACKBONES, VisionTransformer, build_backbone, build_encoder


def _tiny(**kwargs) -> VisionTransformer:  # noqa: ANN003
    torch.manual_seed(0)
    return build_backbone("vit", **{"patch_size": 4, "depth": 2, "dim": 32, "heads": 4, **kwargs})


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_shapes_any_size(size: int, pooling: str) -> None:
    model = _tiny(pooling=pooling)
    assert model(torch.rand(2, 3, size, size)).shape == (2, model.feature_dim) == (2, 32)
    assert model(torch.rand(1, 3, size, size // 2)).shape == (1, 32)  # non-square grids too


def test_position_embedding_interpolated_only_off_grid() -> None:
    model = _tiny()
    assert model.position_embedding(8, 8) is model.pos_embed
    assert model.position_embedding(16, 16).shape == (1, 1 + 256, 32)
    with pytest.raises(ValueError, match="multiple of patch_size=4"):
        model(torch.rand(1, 3, 30, 30))


def test_pooling_options_differ() -> None:
    cls_model, mean_model = _tiny(pooling="cls").eval(), _tiny(pooling="mean").eval()
    mean_model.load_state_dict(cls_model.state_dict())  # same weights, different pooling
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(cls_model(images), mean_model(images))
    with pytest.raises(ValueError, match="pooling"):
        _tiny(pooling="max")


def test_gradients_reach_every_parameter() -> None:
    encoder = build_encoder("vit", None, 8, 16, patch_size=8, depth=2, dim=16, heads=2)
    encoder(torch.rand(4, 3, 64, 64)).square().mean().backward()
    missing = [name for name, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_presets_and_registry_round_trip() -> None:
    assert BACKBONES.entry("vit_tiny").parameters()["dim"].default == 192
    tiny = build_backbone("vit_tiny", depth=1)
    small = build_backbone("vit_small", depth=1)
    assert (tiny.feature_dim, len(tiny.blocks), tiny.patch_size) == (192, 1, 4)
    assert small.feature_dim == 384 and small.blocks[0].attn.heads == 6
    clone = build_backbone("vit_tiny", depth=1)
    clone.load_state_dict(tiny.state_dict())
    images = torch.rand(2, 3, 32, 32)
    tiny.eval(), clone.eval()
    with torch.no_grad():
        assert torch.equal(tiny(images), clone(images))
