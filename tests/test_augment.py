"""augment.backend: the fused code (mcl.augment_fused) is kornia's augmentation, bit for bit, RNG stream included."""

from __future__ import annotations

import itertools

import kornia.augmentation as K
import pytest
import torch

from mcl import augment_fused
from mcl.augment import AUTO_FUSED_DEVICES, build_augmentation, to_float_images
from mcl.config import AugmentConfig, config_from_dict
from mcl.errors import ConfigError

CONFIGS = {
    "default": AugmentConfig(),
    "blur": AugmentConfig(blur=0.5),
    "always": AugmentConfig(color_jitter=1.0, color_jitter_prob=1.0, flip=1.0, grayscale=0.0, blur=1.0),
    # strength 2.5: brightness/contrast/saturation factors in [0, 3] (clamping everywhere), hue the full +-0.5 turn
    "extreme": AugmentConfig(color_jitter=2.5, color_jitter_prob=0.3, grayscale=1.0),
}


def _images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 images as training sees them (k/255 levels, so grays and tied channels occur)."""
    generator = torch.Generator().manual_seed(seed)
    return to_float_images(torch.randint(0, 256, (batch, size, size, 3), generator=generator, dtype=torch.uint8))


def _seeded(augment: torch.nn.Module, images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return augment(images), torch.get_rng_state()


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("batch", "size"), [(1, 8), (37, 16), (96, 32), (12, 96)])  # several chunks at 32, 96 px
def test_every_backend_gives_kornias_output_bit_for_bit(name: str, batch: int, size: int) -> None:
    config, images = CONFIGS[name], _images(batch, size)
    expected = [_seeded(build_augmentation(config, size, backend="kornia"), images, seed) for seed in range(3)]
    for backend in ("fused", "auto"):
        augment = build_augmentation(config, size, backend=backend)
        for seed, (want, want_rng) in enumerate(expected):
            got, got_rng = _seeded(augment, images, seed)
            assert torch.equal(got, want), (backend, seed, (got - want).abs().max().item())
            assert torch.equal(got_rng, want_rng)  # the same draws: training continues on the same stream


def _edge_colours() -> torch.Tensor:
    """(6, 3, 7, 49): every RGB triple of 7 levels (grays, ties, 0 and 1, neighbouring uint8 levels) in each row."""
    levels = torch.tensor([0, 1, 2, 127, 128, 254, 255], dtype=torch.float32) / 255
    colours = torch.cartesian_prod(levels, levels, levels)  # (343, 3)
    return colours.T.reshape(1, 3, 7, 49).repeat(6, 1, 1, 1)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_colour_jitter_equals_kornias_for_given_parameters_in_every_order(order: tuple[int, ...]) -> None:
    images = _edge_colours()
    params = {
        "brightness_factor": torch.tensor([0.0, 0.5, 1.0, 1.7, 3.0, 1.2]),
        "contrast_factor": torch.tensor([1.3, 0.0, 2.0, 1.0, 0.6, 3.0]),
        "saturation_factor": torch.tensor([0.7, 3.0, 0.0, 1.4, 1.0, 1.1]),
        "hue_factor": torch.tensor([-0.5, -0.25, 0.0, 0.1, 0.5, 0.4999]),
        "order": torch.tensor(order),
        "batch_prob": torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0]),  # row 2 is left alone
    }
    for neutral_hue in (False, True):  # an all-neutral factor skips its step
        if neutral_hue:
            params["hue_factor"] = torch.zeros(6)
        want = K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.5)(images, params=dict(params))
        got = augment_fused.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.5)(images, params=dict(params))
        assert torch.equal(got, want), (got - want).abs().max().item()
        assert torch.equal(got[2], images[2])


def test_colour_jitter_parameters_follow_the_config() -> None:
    strength, probability = 0.5, 0.8
    config = AugmentConfig(color_jitter=strength, color_jitter_prob=probability)
    jitter = next(s for s in build_augmentation(config, 16, backend="fused").children()
                  if isinstance(s, K.ColorJitter))
    assert isinstance(jitter, augment_fused.ColorJitter)
    torch.manual_seed(0)
    params = jitter.forward_parameters(torch.Size((20000, 3, 16, 16)))
    for key in ("brightness_factor", "contrast_factor", "saturation_factor"):
        values = params[key]
        assert values.min() >= 1 - 0.8 * strength and values.max() <= 1 + 0.8 * strength
        assert abs(values.mean().item() - 1) < 0.01 and values.std().item() > 0.2  # uniform on [0.6, 1.4]
    hue = params["hue_factor"]
    assert hue.min() >= -0.2 * strength and hue.max() <= 0.2 * strength and hue.std().item() > 0.05
    assert abs(params["batch_prob"].mean().item() - probability) < 0.02
    assert sorted(params["order"].tolist()) == [0, 1, 2, 3]


def test_outside_the_fast_path_the_fused_classes_run_kornias_code() -> None:
    config, images = CONFIGS["always"], _images(8, 16)
    want, _ = _seeded(build_augmentation(config, 16, backend="kornia"), images, 1)
    fused = build_augmentation(config, 16, backend="fused")
    wanting_grad = images.clone().requires_grad_(True)
    got, _ = _seeded(fused, wanting_grad, 1)  # gradients: kornia's differentiable path
    assert torch.equal(got, want)
    got.sum().backward()
    assert wanting_grad.grad is not None
    doubles = images.double()  # float64 takes the fast path, in float64 like kornia
    assert torch.equal(_seeded(fused, doubles, 1)[0], _seeded(build_augmentation(config, 16, backend="kornia"),
                                                              doubles, 1)[0])
    # auto: the fused code only on the device types where it measured faster, kornia's code elsewhere
    meta = torch.empty(2, 3, 16, 16, device="meta")
    for step in build_augmentation(config, 16, backend="auto").children():
        if isinstance(step, augment_fused._FastGate):
            assert step.fast_devices == AUTO_FUSED_DEVICES and not step._fast(meta, {})
            assert step._fast(images, {})
    assert all(step._fast(meta, {}) for step in fused.children() if isinstance(step, augment_fused._FastGate))


def test_backend_is_a_config_key_with_a_one_line_error() -> None:
    assert config_from_dict({}).augment.backend == "auto"
    assert config_from_dict({"augment": {"backend": "fused"}}).augment.backend == "fused"
    with pytest.raises(ConfigError, match="config key 'augment.backend': expected one of 'kornia', 'fused', 'auto'"):
        config_from_dict({"augment": {"backend": "gpu"}})
