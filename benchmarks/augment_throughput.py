"""Augmentation throughput: mcl's batched pipeline (kornia, fused backends) vs the same per sample with PIL.

All three do SimCLR's transforms with mcl's defaults (``AugmentConfig``, plus blur with p=0.5): random
resized crop (scale 0.2-1), horizontal flip (p=0.5), colour jitter (brightness/contrast/saturation
0.4, hue 0.1, p=0.8), grayscale (p=0.2), Gaussian blur (sigma 0.1-2, p=0.5), and return a float
``(B, 3, H, W)`` tensor in [0, 1] from uint8 ``(B, H, W, 3)`` images. The PIL side is a per-image
loop as a torchvision-style ``Dataset.__getitem__`` would run it (crop/resize, ``ImageOps.mirror``,
``ImageEnhance`` brightness/contrast/colour, hue via HSV, ``ImageOps.grayscale``,
``ImageFilter.GaussianBlur``), in this one process. ``kornia`` and ``fused`` are
``build_augmentation(..., backend=...)``: the same module tree, the fused one with
:mod:`mcl.augment_fused`'s drop-ins, and the script first checks that a seeded call of each returns the
same tensor bit for bit. Calls alternate (kornia, fused, PIL, kornia, ...); the table shows images/s and
the ratios ``fused / kornia``, ``fused / PIL`` and ``kornia / PIL``.

    python benchmarks/augment_throughput.py [--quick] [--device cuda] [--batch 256]
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import torch
from _common import interleaved, limit_threads, machine, median, parser, table
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from mcl.augment import build_augmentation, to_float_images
from mcl.config import AugmentConfig

CONFIG = AugmentConfig(blur=0.5)


def crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box: area in ``crop_scale``, aspect ratio in [3/4, 4/3]."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*CONFIG.crop_scale)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    return 0, 0, width, height


def jitter(image: Image.Image, rng: random.Random) -> Image.Image:
    """Colour jitter of strength s: brightness/contrast/saturation by 1 +- 0.8 s, hue by +- 0.2 s."""
    strength = 0.8 * CONFIG.color_jitter
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(1 - strength, 1 + strength))
    hue = np.array(image.convert("HSV"))
    shift = round(rng.uniform(-0.2, 0.2) * CONFIG.color_jitter * 255)
    hue[..., 0] = (hue[..., 0].astype(np.int16) + shift) % 256
    return Image.fromarray(hue, "HSV").convert("RGB")


def pil_augment(array: np.ndarray, rng: random.Random) -> np.ndarray:
    """One image through the per-sample PIL pipeline."""
    image = Image.fromarray(array)
    size = array.shape[0]
    image = image.resize((size, size), Image.BILINEAR, box=crop_box(size, size, rng))
    if rng.random() < CONFIG.flip:
        image = ImageOps.mirror(image)
    if rng.random() < CONFIG.color_jitter_prob:
        image = jitter(image, rng)
    if rng.random() < CONFIG.grayscale:
        image = ImageOps.grayscale(image).convert("RGB")
    if rng.random() < CONFIG.blur:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 2.0)))
    return np.asarray(image)


def pil_batch(images: np.ndarray) -> Callable[[], torch.Tensor]:
    """Per-sample PIL augmentation of the whole batch, stacked into a float tensor."""
    rng = random.Random(0)

    def run() -> torch.Tensor:
        out = np.stack([pil_augment(image, rng) for image in images])
        return to_float_images(torch.from_numpy(out))

    return run


def batched(images: np.ndarray, device: str, backend: str) -> Callable[[], torch.Tensor]:
    """mcl's batched augmentation of the whole batch (uint8 on the device, as in training)."""
    augment = build_augmentation(CONFIG, images.shape[1], backend=backend).to(device)
    batch = torch.from_numpy(images).to(device)
    return lambda: augment(to_float_images(batch))


def same_output(candidates: dict[str, Callable[[], torch.Tensor]]) -> bool:
    """Whether every candidate returns the same tensor, bit for bit, from the same seed."""
    outputs = []
    for run in candidates.values():
        torch.manual_seed(0)
        outputs.append(run())
    return all(torch.equal(outputs[0], other) for other in outputs[1:])


def main() -> None:
    """Print the throughput table."""
    options = parser(__doc__.split("\n")[0])
    options.add_argument("--batch", type=int, default=256, help="images per call (default 256)")
    args = options.parse_args()
    limit_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 10)
    batch = 64 if args.quick else args.batch
    print(f"# augmentation throughput: {machine()}; {args.threads} threads; batch {batch}; {repeats} rounds")
    rows = []
    for size in (32, 96):
        images = np.random.default_rng(size).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        ours = {backend: batched(images, args.device, backend) for backend in ("kornia", "fused")}
        identical = same_output(ours)
        seconds = interleaved({**ours, "pil": pil_batch(images)}, repeats, args.device)
        kornia, fused, pil = (batch / median(seconds[name]) for name in ("kornia", "fused", "pil"))
        rows.append([size, batch, kornia, fused, pil, fused / kornia, fused / pil, kornia / pil,
                     "yes" if identical else "NO"])
        print(table(HEADER, rows[-1:], with_header=False), flush=True)
    print()
    print(table(HEADER, rows))


HEADER = ["px", "batch", "kornia images/s", "fused images/s", "PIL images/s", "fused / kornia", "fused / PIL",
          "kornia / PIL", "bit-identical"]

if __name__ == "__main__":
    main()
