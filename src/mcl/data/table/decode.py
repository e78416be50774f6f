"""Decoding image files into uint8 RGB ``(size, size, 3)`` arrays, in parallel, with a size summary.

Any Pillow mode becomes RGB (16-bit grey rescaled to 8 bits, 32-bit and float grey by its range,
palette transparency and alpha dropped
like torchvision's loader), EXIF orientation is applied, and the image is resized to ``size x size``
with Pillow's antialiased bilinear filter (aspect ratio not kept; JPEGs are first DCT-downscaled).
Changing any of this changes every decoded pixel: bump ``cache._CACHE_VERSION`` with it.

:func:`decode_all` also reports the smallest and largest original size and how many images were
resized, so that loading logs one line such as ``images 28x28..64x64 resized to 32x32 (120 of 200)``.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from mcl.data.table.core import Rows
from mcl.errors import one_line

logger = logging.getLogger("mcl")

# Bounds the number of pending futures (and tqdm updates) when decoding huge tables.
_DECODE_CHUNK = 4096
_WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass
class BadImage:
    """A row whose image could not be decoded, and why."""

    row: int
    path: str
    reason: str


@dataclass
class ImageSizes:
    """Original sizes ``(width, height)`` of the decoded images: extremes by area, and how many were resized."""

    smallest: tuple[int, int]
    largest: tuple[int, int]
    resized: int
    total: int

    def add(self, size: tuple[int, int], resized: bool) -> None:
        """Account for one more decoded image of original ``size``."""
        if _area(size) < _area(self.smallest):
            self.smallest = size
        if _area(size) > _area(self.largest):
            self.largest = size
        self.resized += resized
        self.total += 1

    def log(self, origin: Path, size: int) -> None:
        """Log one INFO line on logger ``mcl`` when any image was resized."""
        if not self.resized:
            return
        low, high = (f"{w}x{h}" for w, h in (self.smallest, self.largest))
        found = low if low == high else f"{low}..{high}"
        logger.info("%s: images %s resized to %dx%d (%d of %d)", origin, found, size, size, self.resized,
                    self.total)

    @classmethod
    def from_json(cls, stored: object) -> ImageSizes | None:
        """The value :func:`dataclasses.asdict` stored in a cache file; None when absent or malformed."""
        if not isinstance(stored, dict):
            return None
        try:
            smallest, largest = (tuple(int(v) for v in stored[key]) for key in ("smallest", "largest"))
            return cls(smallest, largest, int(stored["resized"]), int(stored["total"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return None


def _area(size: tuple[int, int]) -> tuple[int, int, int]:
    return (size[0] * size[1], *size)


def _wide_grey_to_8bit(image: Image.Image) -> np.ndarray:
    """uint8 grey of a 16/32-bit integer or float image (Pillow would clip it to black or white).

    Integers within [0, 65535] are 16-bit grey (divided by 257); floats within [0, 1] are scaled by
    255 and floats within [0, 255] kept; anything else (32-bit integers beyond 16 bits, negative or
    larger floats) is stretched from its own minimum to maximum. NaN becomes 0.
    """
    grey = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(grey.min()), float(grey.max())) if grey.size else (0.0, 0.0)
    if image.mode != "F" and low >= 0 and high <= 65535:
        grey = grey / 257.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        grey = grey * 255.0
    elif not (image.mode == "F" and low >= 0 and high <= 255):
        grey = (grey - low) * (255.0 / (high - low)) if high > low else np.zeros_like(grey)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB (16/32-bit integer and float grey: :func:`_wide_grey_to_8bit`)."""
    if image.mode in _WIDE_GREY_MODES or image.mode == "F" or image.mode.startswith("I;"):
        image = Image.fromarray(_wide_grey_to_8bit(image), "L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when palette transparency is dropped directly
    # Alpha is dropped, not composited, like torchvision's default image loader.
    return image.convert("RGB")


FITS = ("crop", "squash")
_ORIENTATION = 0x0112  # the EXIF orientation tag


def open_image(source: str | os.PathLike | bytes) -> Image.Image:
    """``Image.open`` of a file or of encoded bytes; a path that is not a regular file (a FIFO would block,
    a device never end) is refused before it is opened."""
    if isinstance(source, bytes):
        return Image.open(io.BytesIO(source))
    if not stat.S_ISREG(os.stat(source).st_mode):
        raise ValueError("not a regular file (a directory, FIFO or device)")
    return Image.open(source)


def decode(source: str | os.PathLike | bytes, size: int | None, fit: str = "squash",
           max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """The one image decoder: uint8 RGB ``(size, size, 3)`` (``size=None``: as stored) and the original
    ``(width, height)`` after EXIF rotation.

    ``fit='squash'`` resizes to ``size x size`` with Pillow's antialiased bilinear filter (aspect ratio
    not kept; JPEGs first DCT-downscaled); ``fit='crop'`` centre-crops to a square and resizes with
    bicubic (``ImageOps.fit``, proportions kept, as CLIP's preprocessing; no DCT draft). Any mode
    becomes RGB (:func:`to_rgb`). ``max_pixels``: an image with more pixels is refused from its header
    (``ValueError``), before any pixel is decoded.
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    with open_image(source) as image:
        original = image.size
        if max_pixels is not None and original[0] * original[1] > max_pixels:
            raise ValueError(f"decompression bomb refused: {original[0]}x{original[1]} pixels exceeds the limit "
                             f"of {max_pixels}")
        if fit == "squash" and size is not None and image.format == "JPEG":
            image.draft("RGB", (size, size))  # DCT-domain downscaling: much faster for big photos
        drafted = image.size
        oriented = ImageOps.exif_transpose(image) if image.getexif().get(_ORIENTATION, 1) != 1 else image
        rgb = to_rgb(oriented)
    if rgb.size != drafted:
        original = original[::-1]  # EXIF rotated the image by 90 degrees
    if size is not None and fit == "crop":
        rgb = ImageOps.fit(rgb, (size, size), Image.Resampling.BICUBIC)
    elif size is not None and rgb.size != (size, size):
        # Bilinear resampling in Pillow widens its kernel when shrinking, so it is antialiased.
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8), original


def decode_image(path: Path, size: int, fit: str = "squash") -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image file of any mode/size into uint8 RGB ``(size, size, 3)`` (:func:`decode`; an image
    table's default ``fit`` is ``squash``). Also returns the original ``(width, height)``."""
    return decode(path, size, fit)


def decode_bytes(data: bytes, size: int, max_pixels: int | None = None, fit: str = "squash") -> np.ndarray:
    """Decode encoded image bytes (a shard member) to uint8 RGB ``(size, size, 3)``: with the same ``fit``,
    the same pixels as :func:`decode_image` of the same bytes in a file.

    Raises ``ValueError`` for an image of more than ``max_pixels`` pixels (default Pillow's
    ``Image.MAX_IMAGE_PIXELS``) from its header alone, so a decompression bomb never allocates pixels.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        return decode(data, size, fit, limit)[0]
    except Image.DecompressionBombError as exc:
        raise ValueError(f"decompression bomb refused ({one_line(exc)})") from None


def failure_reason(exc: Exception) -> str:
    """A short, one-line reason for a failed decode."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    text = one_line(exc) or "no details"
    return f"{type(exc).__name__}: {text}"


def decode_all(
    root: Path, rows: Rows, size: int, out: np.ndarray, progress: bool, fail_fast: bool
) -> tuple[list[BadImage], ImageSizes | None]:
    """Decode every row into ``out``; return the unreadable ones (only the first when ``fail_fast``) and the
    original sizes of the readable ones (None when none was readable)."""

    def decode(row: int) -> BadImage | tuple[int, int]:
        try:
            out[row], original = decode_image(root / rows.paths[row], size)
        except Exception as exc:  # Pillow raises many unrelated types for corrupt files
            return BadImage(row, rows.paths[row], failure_reason(exc))
        return original

    bad: list[BadImage] = []
    sizes: ImageSizes | None = None
    n = len(rows.paths)
    workers = min(8, os.cpu_count() or 1)
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=n, disable=not (progress and sys.stderr.isatty()), unit="img", desc=f"decoding {root.name}") as bar,
    ):
        for start in range(0, n, _DECODE_CHUNK):
            for result in pool.map(decode, range(start, min(n, start + _DECODE_CHUNK))):
                bar.update()
                if isinstance(result, BadImage):
                    bad.append(result)
                    if fail_fast:
                        pool.shutdown(cancel_futures=True)
                        return bad, sizes
                elif sizes is None:
                    sizes = ImageSizes(result, result, int(result != (size, size)), 1)
                else:
                    sizes.add(result, result != (size, size))
    return bad, sizes
