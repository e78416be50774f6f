"""Test helpers for WebDataset shards: images that encode their row, and raw tar writing."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np


def id_images(n: int, size: int = 16) -> np.ndarray:
    """Solid images whose colour encodes their row (survives JPEG): see :func:`decode_ids`."""
    rows = np.arange(n)
    colours = np.stack([8 + 16 * (rows % 16), 8 + 16 * ((rows // 16) % 16), np.full(n, 128)], axis=1)
    return np.broadcast_to(colours[:, None, None, :], (n, size, size, 3)).astype(np.uint8).copy()


def decode_ids(images: np.ndarray) -> np.ndarray:
    """The row each image of :func:`id_images` encodes."""
    mean = np.asarray(images, dtype=np.float64).mean(axis=(1, 2))
    return (np.rint((mean[:, 0] - 8) / 16) + 16 * np.rint((mean[:, 1] - 8) / 16)).astype(np.int64)


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A plain tar file with ``members`` (name, bytes) in order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
