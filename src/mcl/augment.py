"""Batched image augmentation on tensors (kornia), SimCLR-style.

Augmenting whole batches on the training device is what keeps a 2-core CPU busy with the model
rather than with per-image PIL calls (see ``benchmarks/augment_throughput.py``).

``augment.backend`` chooses the code that runs, never the result: ``kornia`` is kornia's classes;
``fused`` swaps in :mod:`mcl.augment_fused`'s subclasses (the same random draws, the same output bit for
bit, faster on CPU); ``auto`` (the default) uses the fused code on the device types listed in
:data:`AUTO_FUSED_DEVICES` (CPU) and kornia's code elsewhere.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mcl.config import AugmentConfig

# Device types where the fused code measured faster than kornia's (benchmarks/README.md, section 3). CUDA is
# not listed until measured: there kornia's torch.where is cheap, and the fused hue step launches as many kernels.
AUTO_FUSED_DEVICES = frozenset({"cpu"})


def build_augmentation(config: AugmentConfig, image_size: int, backend: str | None = None) -> nn.Module:
    """The two-view training transform: crop, flip, colour jitter (strength s), grayscale, blur.

    Colour jitter follows SimCLR: brightness/contrast/saturation ``0.8 s``, hue ``0.2 s``, applied
    with probability ``color_jitter_prob``. Weak colour jitter is what lets colour become the
    "easy" feature that suppresses others, which MCL then repairs. ``backend`` overrides
    ``config.backend`` (kornia | fused | auto); every backend gives the same output for the same seed.
    """
    import kornia.augmentation as K  # imported here: only training needs it, not loading or evaluating a model

    backend = backend or config.backend
    ops: Any = K
    if backend != "kornia":
        from mcl import augment_fused as ops

    strength = config.color_jitter
    steps: list[nn.Module] = [
        K.RandomResizedCrop((image_size, image_size), scale=tuple(config.crop_scale)),
    ]
    if config.flip > 0:
        steps.append(ops.RandomHorizontalFlip(p=config.flip))
    if strength > 0 and config.color_jitter_prob > 0:
        steps.append(ops.ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, min(0.5, 0.2 * strength),
                                     p=config.color_jitter_prob))
    if config.grayscale > 0:
        steps.append(ops.RandomGrayscale(p=config.grayscale))
    if config.blur > 0:
        kernel = max(3, (image_size // 10) | 1)  # odd, ~10% of the image as in SimCLR
        steps.append(ops.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=config.blur))
    if backend == "auto":
        for step in steps:
            step.fast_devices = AUTO_FUSED_DEVICES
    return K.AugmentationSequential(*steps)


def to_float_images(batch: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float in [0, 1] (the eval transform)."""
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


def seeded_views(augment: nn.Module, images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented views ``(B, 3, H, W)`` of uint8 CPU images ``(B, H, W, 3)``, drawn from torch's CPU RNG
    seeded with ``seed`` and restored afterwards: the same views on every call, whatever ran before."""
    batch = to_float_images(images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return augment(batch), augment(batch)
