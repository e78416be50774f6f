import numpy as np
import pytest
import torch

from mcl.integration import MultistageEncoder, integrate, select_stages
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


@pytest.mark.parametrize(("stages", "available", "default", "expected"), [
    (None, [1, 2, 3], [1, 2, 3], [1, 2, 3]),
    (2, [1, 2, 3], [1, 2, 3], [1, 2]),
    ([3, 1], [1, 2, 3], [1, 2, 3], [3, 1]),
    (None, [0, 1, 2], [1, 2], [1, 2]),        # stage 0 held, not a member by default
    (2, [0, 1, 2], [0, 1, 2], [0, 1, 2]),     # an int keeps stage 0 when the members include it
    (1, [0, 1, 2], [1, 2], [1]),
    ([0], [0, 1, 2], [1, 2], [0]),
])
def test_one_stage_selection_rule(stages, available, default, expected):
    assert select_stages(stages, available, default) == expected


@pytest.mark.parametrize(("stages", "message"), [
    (0, "at least one of stages 1..3"), ([], "at least one"), (4, "no stage 4; this model has stages 1..3"),
    ([0], "no stage 0; this model has stages 1..3"),
])
def test_stage_selection_errors_name_the_stages_held(stages, message):
    with pytest.raises(ValueError, match=message):
        select_stages(stages, [1, 2, 3], [1, 2, 3])


def test_embed_converts_inputs_as_the_evaluators_do():
    """uint8 NHWC and float NCHW batches reach the stages as images_to_tensor makes them (one conversion)."""
    from mcl.embedding import images_to_tensor

    torch.manual_seed(0)
    encoder = MultistageEncoder([build_encoder("convnet", 0.25)]).eval()
    images = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = encoder(images_to_tensor(images)).numpy()
    assert np.array_equal(encoder.embed(images), expected)
    assert np.array_equal(encoder.embed(images_to_tensor(images).double()), expected)  # float64 -> float32
    with pytest.raises(ValueError, match=r"uint8 images must be \(N, H, W, 3\)"):
        encoder.embed(images.transpose(0, 3, 1, 2))
