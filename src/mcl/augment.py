"""Batched image augmentation on tensors (kornia), SimCLR-style.

Augmenting whole batches on the training device is what keeps a 2-core CPU busy with the model
rather than with per-image PIL calls (see ``benchmarks/augment_throughput.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from mcl.config import AugmentConfig


def build_augmentation(config: AugmentConfig, image_size: int) -> nn.Module:
    """The two-view training transform: crop, flip, colour jitter (strength s), grayscale, blur.

    Colour jitter follows SimCLR: brightness/contrast/saturation ``0.8 s``, hue ``0.2 s``, applied
    with probability ``color_jitter_prob``. Weak colour jitter is what lets colour become the
    "easy" feature that suppresses others, which MCL then repairs.
    """
    import kornia.augmentation as K  # imported here: only training needs it, not loading or evaluating a model

    strength = config.color_jitter
    steps: list[nn.Module] = [
        K.RandomResizedCrop((image_size, image_size), scale=tuple(config.crop_scale)),
    ]
    if config.flip > 0:
        steps.append(K.RandomHorizontalFlip(p=config.flip))
    if strength > 0 and config.color_jitter_prob > 0:
        steps.append(K.ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, min(0.5, 0.2 * strength),
                                   p=config.color_jitter_prob))
    if config.grayscale > 0:
        steps.append(K.RandomGrayscale(p=config.grayscale))
    if config.blur > 0:
        kernel = max(3, (image_size // 10) | 1)  # odd, ~10% of the image as in SimCLR
        steps.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=config.blur))
    return K.AugmentationSequential(*steps)


def to_float_images(batch: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float in [0, 1] (the eval transform)."""
    return batch.permute(0, 3, 1, 2).float().div_(255.0)
