import numpy as np
import pytest
import torch

from mcl.integration import MultistageEncoder, integrate
from mcl.models import build_encoder


def test_normalized_concat_gives_each_stage_unit_norm():
    a, b = torch.randn(5, 3) * 10, torch.randn(5, 4)
    out = integrate([a, b], "normalized-concat")
    assert out.shape == (5, 7)
    assert torch.allclose(out[:, :3].norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(out[:, 3:].norm(dim=1), torch.ones(5), atol=1e-5)
    whole = integrate([a, b], "concat-then-normalize")
    assert torch.allclose(whole.norm(dim=1), torch.ones(5), atol=1e-5)
    with pytest.raises(ValueError):
        integrate([a], "sum")


def test_multistage_encoder_embeds_uint8_and_selects_stages():
    torch.manual_seed(0)
    stages = [build_encoder("convnet", 0.25) for _ in range(3)]
    encoder = MultistageEncoder(stages).eval()
    images = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    dim = stages[0].feature_dim
    assert encoder.embed(images).shape == (6, 3 * dim)
    first_two = encoder.embed(images, stages=2)
    assert first_two.shape == (6, 2 * dim)
    assert np.allclose(first_two, encoder.embed(images)[:, : 2 * dim], atol=1e-5)
    assert encoder.embed(images, stages=[3]).shape == (6, dim)
    with pytest.raises(ValueError):
        encoder.embed(images, stages=4)
